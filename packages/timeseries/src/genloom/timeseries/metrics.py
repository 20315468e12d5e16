"""Forecast metrics: point (MSE, MAE, MASE, sMAPE) and probabilistic (CRPS, weighted quantile loss,
interval coverage). numpy in, float out; the time axis is the second-to-last axis where it matters.

Conventions follow the literature the tables come from: MSE/MAE averaged over every element (TSLib);
sMAPE in percent, 200 * |y - f| / (|y| + |f|) (M4); MASE scaled by the in-sample seasonal-naive MAE of
the history (M4 / GluonTS); weighted quantile loss = 2 * sum of pinball losses / sum |y| (GluonTS
`mean_wQuantileLoss`); CRPS from samples by the energy form E|X - y| - E|X - X'| / 2 (estimated without
bias over distinct pairs), and from quantiles as twice the pinball loss integrated over the levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genloom.timeseries.errors import SeriesInputError


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise SeriesInputError(f"forecast shape {y_pred.shape} does not match target shape {y_true.shape}")
    return y_true, y_pred


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean((y_pred - y_true) ** 2))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean(np.abs(y_pred - y_true)))


def smape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Symmetric MAPE in percent (0..200); a step where both are 0 counts as 0."""
    y_true, y_pred = _pair(y_true, y_pred)
    denom = np.abs(y_true) + np.abs(y_pred)
    ratio = np.divide(np.abs(y_pred - y_true), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(200.0 * np.mean(ratio))


def seasonal_naive_scale(history: np.ndarray, season: int = 1) -> float:
    """Mean absolute `season`-step difference of the history: the denominator of MASE."""
    history = np.asarray(history, dtype=np.float64)
    if history.shape[-1] <= season:
        raise SeriesInputError(
            f"MASE needs a history longer than the season {season}, got {history.shape[-1]} steps"
        )
    return float(np.mean(np.abs(history[..., season:] - history[..., :-season])))


def mase(y_true: np.ndarray, y_pred: np.ndarray, history: np.ndarray, season: int = 1) -> float:
    """Mean absolute scaled error of one series: MAE of the forecast / in-sample seasonal-naive MAE."""
    scale = seasonal_naive_scale(history, season)
    if scale == 0.0:
        raise SeriesInputError("MASE is undefined for a history whose seasonal differences are all zero")
    return mae(y_true, y_pred) / scale


def seasonal_naive_forecast(history: np.ndarray, horizon: int, season: int = 1) -> np.ndarray:
    """Repeat the last `season` values of the history over the horizon (the MASE reference forecast)."""
    history = np.asarray(history, dtype=np.float64)
    if history.shape[-1] < season:
        raise SeriesInputError(f"seasonal naive needs {season} steps of history, got {history.shape[-1]}")
    last = history[..., -season:]
    reps = int(np.ceil(horizon / season))
    return np.concatenate([last] * reps, axis=-1)[..., :horizon]


def crps_from_samples(y_true: np.ndarray, samples: np.ndarray) -> float:
    """Mean CRPS of sample forecasts; samples have a leading sample axis: [S, *y_true.shape].

    Uses the sorted-sample identity for E|X - X'| over distinct pairs (unbiased, "fair" CRPS).
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    samples = np.asarray(samples, dtype=np.float64)
    if samples.shape[1:] != y_true.shape:
        raise SeriesInputError(f"samples shape {samples.shape} must be [n_samples, *{y_true.shape}]")
    n = samples.shape[0]
    if n < 2:
        raise SeriesInputError(f"CRPS from samples needs at least 2 samples, got {n}")
    term1 = np.mean(np.abs(samples - y_true[None]), axis=0)
    ordered = np.sort(samples, axis=0)
    weights = (2 * np.arange(1, n + 1) - n - 1).reshape((n,) + (1,) * y_true.ndim)
    pair_mean = 2.0 * np.sum(weights * ordered, axis=0) / (n * (n - 1))  # E|X - X'| over i != j
    return float(np.mean(term1 - 0.5 * pair_mean))


def pinball_loss(y_true: np.ndarray, quantile_pred: np.ndarray, level: float) -> np.ndarray:
    """Elementwise quantile (pinball) loss of one quantile forecast."""
    diff = np.asarray(y_true, dtype=np.float64) - np.asarray(quantile_pred, dtype=np.float64)
    return np.maximum(level * diff, (level - 1.0) * diff)


def _check_quantiles(y_true: np.ndarray, quantiles: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    quantiles = np.asarray(quantiles, dtype=np.float64)
    if quantiles.shape != (len(levels), *np.shape(y_true)):
        raise SeriesInputError(
            f"quantile forecasts shape {quantiles.shape} must be [n_levels={len(levels)}, *{np.shape(y_true)}]"
        )
    if any(not 0.0 < q < 1.0 for q in levels):
        raise SeriesInputError(f"quantile levels must lie strictly between 0 and 1, got {list(levels)}")
    return quantiles


def weighted_quantile_loss(y_true: np.ndarray, quantiles: np.ndarray, levels: Sequence[float]) -> float:
    """Mean over levels of 2 * sum(pinball) / sum(|y|) (GluonTS mean weighted quantile loss)."""
    quantiles = _check_quantiles(y_true, quantiles, levels)
    denom = float(np.sum(np.abs(y_true)))
    if denom == 0.0:
        raise SeriesInputError("weighted quantile loss is undefined when every target value is 0")
    losses = [2.0 * np.sum(pinball_loss(y_true, quantiles[i], q)) / denom for i, q in enumerate(levels)]
    return float(np.mean(losses))


def crps_from_quantiles(y_true: np.ndarray, quantiles: np.ndarray, levels: Sequence[float]) -> float:
    """CRPS approximated by 2 * the mean pinball loss over evenly spread levels (the integral form)."""
    quantiles = _check_quantiles(y_true, quantiles, levels)
    losses = [pinball_loss(y_true, quantiles[i], q) for i, q in enumerate(levels)]
    return float(2.0 * np.mean(np.stack(losses)))


def interval_coverage(y_true: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of targets inside [lower, upper] (compare with the interval's nominal level)."""
    y_true, lower = _pair(y_true, lower)
    _, upper = _pair(y_true, upper)
    if np.any(lower > upper):
        raise SeriesInputError("interval lower bound exceeds the upper bound somewhere")
    return float(np.mean((y_true >= lower) & (y_true <= upper)))


def samples_to_quantiles(samples: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Empirical quantiles over the leading sample axis: [len(levels), *samples.shape[1:]]."""
    return np.quantile(np.asarray(samples, dtype=np.float64), list(levels), axis=0)
