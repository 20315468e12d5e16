"""Offline series for tests, demos and the shipped zero-shot model: statsmodels' bundled data sets and
synthetic generators (trend, seasonality, regime switches, noise). No network needed."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from genloom.timeseries.errors import SeriesInputError


@dataclass
class OfflineSeries:
    """One univariate series with its calendar and its natural season (for seasonal naive / MASE)."""

    name: str
    values: np.ndarray
    index: pd.DatetimeIndex
    freq: str
    season: int
    notes: str = ""


MACRO_COLUMNS = (
    "realgdp",
    "realcons",
    "realinv",
    "realgovt",
    "realdpi",
    "cpi",
    "m1",
    "tbilrate",
    "unemp",
    "pop",
    "infl",
    "realint",
)


@functools.cache
def _statsmodels_series() -> tuple[OfflineSeries, ...]:
    return tuple(_load_statsmodels_series())


def statsmodels_series() -> list[OfflineSeries]:
    """co2 (weekly, gaps interpolated), sunspots and Nile (annual), El Nino (monthly), macrodata (quarterly).

    Loaded once per process (copies returned)."""
    return [dataclasses.replace(s, values=s.values.copy()) for s in _statsmodels_series()]


def _load_statsmodels_series() -> list[OfflineSeries]:
    """Read the bundled data sets (the statsmodels imports are the slow part)."""
    from statsmodels.datasets import co2 as sm_co2
    from statsmodels.datasets import elnino as sm_elnino
    from statsmodels.datasets import macrodata as sm_macrodata
    from statsmodels.datasets import nile as sm_nile
    from statsmodels.datasets import sunspots as sm_sunspots

    out: list[OfflineSeries] = []
    co2 = sm_co2.load_pandas().data["co2"]
    n_missing = int(co2.isna().sum())
    out.append(
        OfflineSeries(
            "co2",
            co2.interpolate(limit_direction="both").to_numpy(np.float64),
            pd.DatetimeIndex(co2.index),
            "W-SAT",
            52,
            f"{n_missing} missing weeks filled by linear interpolation",
        )
    )
    sun = sm_sunspots.load_pandas().data
    out.append(
        OfflineSeries(
            "sunspots",
            sun["SUNACTIVITY"].to_numpy(np.float64),
            pd.date_range("1700", periods=len(sun), freq="YS"),
            "YS",
            11,
        )
    )
    nino = sm_elnino.load_pandas().data
    monthly = nino.drop(columns="YEAR").to_numpy(np.float64).reshape(-1)
    out.append(
        OfflineSeries(
            "elnino",
            monthly,
            pd.date_range(f"{int(nino['YEAR'].iloc[0])}-01", periods=len(monthly), freq="MS"),
            "MS",
            12,
        )
    )
    nile = sm_nile.load_pandas().data
    out.append(
        OfflineSeries(
            "nile",
            nile["volume"].to_numpy(np.float64),
            pd.date_range("1871", periods=len(nile), freq="YS"),
            "YS",
            1,
        )
    )
    macro = sm_macrodata.load_pandas().data
    index = pd.date_range("1959-01", periods=len(macro), freq="QS")
    for col in MACRO_COLUMNS:
        out.append(OfflineSeries(f"macro_{col}", macro[col].to_numpy(np.float64), index, "QS", 4))
    return out


def offline_series(name: str) -> OfflineSeries:
    """One bundled series by name (co2, sunspots, elnino, nile, macro_<column>)."""
    for series in statsmodels_series():
        if series.name == name:
            return series
    names = [s.name for s in statsmodels_series()]
    raise SeriesInputError(f"unknown bundled series {name!r}; available: {names}")


def synthetic_trend(length: int, rng: np.random.Generator) -> np.ndarray:
    """Linear, quadratic or exponential-ish trend with a random slope and level."""
    t = np.arange(length) / length
    kind = rng.integers(3)
    slope = rng.normal(0, 2)
    if kind == 0:
        return slope * t
    if kind == 1:
        return slope * t + rng.normal(0, 1.5) * t**2
    return np.sign(slope) * (np.exp(abs(slope) * t) - 1)


def synthetic_seasonality(
    length: int, rng: np.random.Generator, period: int | None = None
) -> tuple[np.ndarray, int]:
    """A sum of harmonics of one period (the period is returned for seasonal naive)."""
    period = int(period or rng.choice([4, 7, 12, 24, 52]))
    t = np.arange(length)
    out = np.zeros(length)
    for k in range(1, int(rng.integers(1, 4)) + 1):
        out += rng.normal(0, 1.0 / k) * np.sin(2 * np.pi * k * t / period + rng.uniform(0, 2 * np.pi))
    return out, period


def synthetic_regimes(length: int, rng: np.random.Generator) -> np.ndarray:
    """Piecewise-constant level shifts at random change points (regime switches)."""
    n_switch = int(rng.integers(1, 4))
    points = np.sort(rng.choice(np.arange(length // 8, length - length // 8), n_switch, replace=False))
    levels = np.cumsum(rng.normal(0, 1.5, n_switch + 1))
    return levels[np.searchsorted(points, np.arange(length), side="right")]


def synthetic_noise(length: int, rng: np.random.Generator, scale: float = 0.3) -> np.ndarray:
    """AR(1) noise (phi random in [0, 0.9]); random-walk-like when phi is high."""
    from scipy.signal import lfilter

    phi = rng.uniform(0, 0.9)
    eps = rng.normal(0, scale, length)
    eps[0] = 0.0
    return lfilter([1.0], [1.0, -phi], eps)


def synthetic_series(length: int, seed: int, *, kinds: tuple[str, ...] | None = None) -> OfflineSeries:
    """A random mix of trend / seasonality / regimes / noise with a random level and scale."""
    if length < 16:
        raise SeriesInputError(f"synthetic series need at least 16 steps, got {length}")
    rng = np.random.default_rng(seed)
    kinds = kinds or tuple(k for k in ("trend", "seasonal", "regime") if rng.random() < 0.6) or ("seasonal",)
    values = np.zeros(length)
    season = 1
    if "trend" in kinds:
        values += synthetic_trend(length, rng)
    if "seasonal" in kinds:
        seasonal, season = synthetic_seasonality(length, rng)
        values += seasonal * rng.uniform(0.5, 2.0)
    if "regime" in kinds:
        values += synthetic_regimes(length, rng)
    values += synthetic_noise(length, rng, scale=rng.uniform(0.05, 0.5))
    values = values * rng.uniform(0.5, 50) + rng.uniform(-10, 100)
    index = pd.date_range("2000-01-01", periods=length, freq="h")
    return OfflineSeries(f"synthetic_{seed}", values, index, "h", season, "+".join(kinds))
