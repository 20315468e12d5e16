"""High-level forecasting: a checked SeriesTable in, a tidy forecast frame (and optional plot) out.

`load_forecaster_by_name` resolves a preset name (the zoo), a folder, or "seasonal-naive"; every
forecaster exposes `forecast(context [B, L], horizon, levels=..., num_samples=..., seed=...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genloom.core.io import atomic_path
from genloom.timeseries.data.frames import SeriesTable
from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.models.tokenized_ar import ProbabilisticForecast, forecast_from_samples

DEFAULT_PRESET = "tiny-tokenized-ar"


class SeasonalNaiveForecaster:
    """Repeat the last season; quantiles from the spread of past seasonal errors (for reference runs)."""

    context_len = 1_000_000

    def __init__(self, season: int = 1):
        self.season = season

    def forecast(
        self,
        context: np.ndarray,
        horizon: int,
        *,
        levels=(0.1, 0.5, 0.9),
        num_samples: int = 100,
        seed: int = 0,
        **_,
    ) -> ProbabilisticForecast:
        context = np.atleast_2d(np.asarray(context, dtype=np.float64))
        if context.shape[1] <= self.season:
            raise SeriesInputError(f"seasonal naive needs more than {self.season} steps of history")
        last = context[:, -self.season :]
        point = np.concatenate([last] * int(np.ceil(horizon / self.season)), axis=1)[:, :horizon]
        errors = context[:, self.season :] - context[:, : -self.season]
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, errors.shape[1], size=(num_samples, horizon))
        steps = np.sqrt(np.arange(1, horizon + 1) / self.season).clip(min=1.0)
        samples = point[None] + errors[:, picks].transpose(1, 0, 2) * steps
        return forecast_from_samples(samples, list(levels))


def timeseries_preset_names() -> list[str]:
    """Names of the registered presets of the timeseries modality."""
    from genloom.core.zoo import list_presets

    return sorted(p.name for p in list_presets("timeseries"))


def load_forecaster_by_name(name: str | None = None, *, device: str = "cpu", season: int = 1) -> Any:
    """A forecaster from a preset name or folder (through `genloom.core.zoo.from_pretrained`), or the
    seasonal-naive reference; default: the shipped zero-shot preset."""
    from genloom.timeseries.pretrained import load_forecaster

    name = name or DEFAULT_PRESET
    if name == "seasonal-naive":
        return SeasonalNaiveForecaster(season)
    if not Path(name).is_dir() and name not in timeseries_preset_names():
        raise SeriesInputError(
            f"unknown model {name!r}: expected a timeseries preset ({timeseries_preset_names()}), "
            "'seasonal-naive', or a folder with model/config.json"
        )
    return load_forecaster(name, device=device)


def future_index(index: pd.DatetimeIndex, freq: str | None, horizon: int) -> pd.DatetimeIndex:
    """The next `horizon` timestamps after `index` (the inferred frequency, else the last step)."""
    if freq is not None:
        return pd.date_range(index[-1], periods=horizon + 1, freq=freq)[1:]
    step = index[-1] - index[-2] if len(index) > 1 else pd.Timedelta(1, "D")
    return pd.DatetimeIndex([index[-1] + step * (i + 1) for i in range(horizon)])


def parse_quantiles(text: str) -> list[float]:
    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SeriesInputError(
            f"quantiles must be comma-separated numbers like 0.1,0.5,0.9, got {text!r}"
        ) from None
    if not levels or any(not 0 < q < 1 for q in levels):
        raise SeriesInputError(f"quantiles must lie strictly between 0 and 1, got {text!r}")
    return sorted(levels)


def forecast_table(
    table: SeriesTable,
    horizon: int,
    forecaster,
    *,
    levels: list[float] | None = None,
    num_samples: int = 50,
    seed: int = 0,
    min_history: int = 16,
) -> pd.DataFrame:
    """Forecast every column: a long frame (unique_id, ds, mean, median, q<level>...)."""
    if horizon <= 0:
        raise SeriesInputError(f"horizon must be positive, got {horizon}")
    table.require_history(min_history)
    levels = levels or [0.1, 0.5, 0.9]
    context = table.values[-min(len(table.index), forecaster.context_len) :].T
    result = forecaster.forecast(context, horizon, levels=tuple(levels), num_samples=num_samples, seed=seed)
    dates = future_index(table.index, table.freq, horizon)
    frames = []
    for j, name in enumerate(table.columns):
        part = {"unique_id": name, "ds": dates, "mean": result.mean[j], "median": result.median[j]}
        part.update({f"q{level:g}": result.quantiles[i, j] for i, level in enumerate(levels)})
        frames.append(pd.DataFrame(part))
    return pd.concat(frames, ignore_index=True)


def write_csv_atomic(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def plot_forecast(
    table: SeriesTable,
    forecast: pd.DataFrame,
    path: str | Path,
    *,
    history: int = 200,
    actual: np.ndarray | None = None,
) -> Path:
    """History, median and quantile bands per series, one panel each (matplotlib Agg); `actual` [H, C]
    (optional) draws what really happened over the horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    qcols = sorted([c for c in forecast.columns if c.startswith("q")], key=lambda c: float(c[1:]))
    n = len(table.columns)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.6 * n), squeeze=False)
    for j, name in enumerate(table.columns):
        ax = axes[j, 0]
        ax.plot(table.index[-history:], table.values[-history:, j], color="black", lw=1, label="history")
        part = forecast[forecast["unique_id"] == name]
        if len(qcols) >= 2:
            ax.fill_between(
                part["ds"],
                part[qcols[0]],
                part[qcols[-1]],
                color="tab:blue",
                alpha=0.25,
                label=f"{qcols[0][1:]}-{qcols[-1][1:]} quantiles",
            )
        if len(qcols) >= 4:
            ax.fill_between(part["ds"], part[qcols[1]], part[qcols[-2]], color="tab:blue", alpha=0.35)
        ax.plot(part["ds"], part["median"], color="tab:blue", lw=1.5, label="median")
        if actual is not None:
            ax.plot(part["ds"], np.asarray(actual)[:, j], color="tab:red", lw=1, ls="--", label="actual")
        ax.set_title(str(name))
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path
