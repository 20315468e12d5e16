"""Calendar features of a timestamp index, as the Time-Series-Library computes them.

`timeenc=1` ("timeF"): each feature scaled into [-0.5, 0.5], the set chosen by the frequency
(hourly data: hour of day, day of week, day of month, day of year). `timeenc=0`: raw integer
calendar fields (month, day, weekday, hour[, minute // 15]) for the fixed/learned embeddings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from genloom.timeseries.errors import SeriesInputError


def _second_of_minute(index: pd.DatetimeIndex) -> np.ndarray:
    return index.second / 59.0 - 0.5


def _minute_of_hour(index: pd.DatetimeIndex) -> np.ndarray:
    return index.minute / 59.0 - 0.5


def _hour_of_day(index: pd.DatetimeIndex) -> np.ndarray:
    return index.hour / 23.0 - 0.5


def _day_of_week(index: pd.DatetimeIndex) -> np.ndarray:
    return index.day_of_week / 6.0 - 0.5


def _day_of_month(index: pd.DatetimeIndex) -> np.ndarray:
    return (index.day - 1) / 30.0 - 0.5


def _day_of_year(index: pd.DatetimeIndex) -> np.ndarray:
    return (index.day_of_year - 1) / 365.0 - 0.5


def _month_of_year(index: pd.DatetimeIndex) -> np.ndarray:
    return (index.month - 1) / 11.0 - 0.5


def _week_of_year(index: pd.DatetimeIndex) -> np.ndarray:
    return (index.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5


_DAY = [_day_of_week, _day_of_month, _day_of_year]
# Keyed by the base of a pandas offset alias ("h", "t"/"min", "s", "d", "b", "w", "m", "q", "a"/"y").
_FEATURES_BY_FREQ = {
    "y": [],
    "a": [],
    "q": [_month_of_year],
    "m": [_month_of_year],
    "w": [_day_of_month, _week_of_year],
    "d": _DAY,
    "b": _DAY,
    "h": [_hour_of_day, *_DAY],
    "t": [_minute_of_hour, _hour_of_day, *_DAY],
    "min": [_minute_of_hour, _hour_of_day, *_DAY],
    "s": [_second_of_minute, _minute_of_hour, _hour_of_day, *_DAY],
}
# Number of timeF features per frequency letter (the `freq_map` of the TSLib TimeFeatureEmbedding).
TIME_FEATURE_DIMS = {"h": 4, "t": 5, "s": 6, "m": 1, "a": 1, "w": 2, "d": 3, "b": 3}


def _freq_key(freq: str) -> str:
    """Normalise a frequency string ('h', '1H', '15min', 't', 'D', ...) to a key of _FEATURES_BY_FREQ."""
    letters = "".join(ch for ch in freq if not ch.isdigit()).strip().lower()
    aliases = {"hour": "h", "minute": "t", "min": "t", "t": "t", "sec": "s", "me": "m", "ms": "m", "ye": "y"}
    letters = aliases.get(letters, letters)
    if letters not in _FEATURES_BY_FREQ:
        raise SeriesInputError(
            f"unknown frequency {freq!r}: expected one of h, t (minute), s, d, b, w, m, q, y with an optional multiple"
        )
    return letters


def time_features(dates: pd.DatetimeIndex | pd.Series, freq: str = "h", *, timeenc: int = 1) -> np.ndarray:
    """Calendar features of `dates`, shape [len(dates), n_features], float64.

    timeenc=1: the scaled features the TSLib `time_features` returns (transposed to time-major);
    timeenc=0: integer columns month, day, weekday, hour (plus minute // 15 for minute data).
    """
    index = pd.DatetimeIndex(pd.to_datetime(dates))
    key = _freq_key(freq)
    if timeenc == 1:
        feats = _FEATURES_BY_FREQ[key]
        if not feats:
            return np.zeros((len(index), 0), dtype=np.float64)
        return np.stack([np.asarray(f(index), dtype=np.float64) for f in feats], axis=1)
    if timeenc == 0:
        cols = [index.month, index.day, index.day_of_week, index.hour]
        if key in ("t", "min"):
            cols.append(index.minute // 15)
        return np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1)
    raise SeriesInputError(
        f"timeenc must be 0 (raw calendar fields) or 1 (scaled timeF features), got {timeenc}"
    )
