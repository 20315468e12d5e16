"""genloom timeseries: generative forecasters (GPHT, tokenised AR, diffusion) beside the supervised
baselines (iTransformer, PatchTST, DLinear, Informer, Autoformer) on the long-term forecasting protocol."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(name: str | None = None, *, device: str = "cpu") -> Any:
    """A forecaster by preset name, folder, or 'seasonal-naive' (default: the shipped zero-shot preset)."""
    from genloom.timeseries.forecast import load_forecaster_by_name

    return load_forecaster_by_name(name, device=device)


def load_official(folder: str, **overrides: Any) -> Any:
    """A baseline or GPHT from an official config.json + model.safetensors (official key names)."""
    from genloom.timeseries.models.official import load_official as _load_official

    return _load_official(folder, **overrides)


__all__ = ["__version__", "load", "load_official"]
