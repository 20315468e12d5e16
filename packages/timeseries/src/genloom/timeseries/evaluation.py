"""Evaluate any model on the long-term protocol's test split.

Supervised baselines (a folder with config.json + model.safetensors, official key layout) are scored on
every test window as the TSLib does. Sampling forecasters (presets, seasonal naive) are scored per
channel on every `stride`-th test window (sampling every window is costly), on the same scaled values:
MSE/MAE of the median, and CRPS of the sample paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genloom.timeseries.data.protocol import LongTermForecastProtocol
from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.metrics import crps_from_samples, mae, mse


def evaluate_long_term(
    data: str | Path,
    *,
    model: str | None = None,
    horizon: int = 96,
    stride: int = 24,
    num_samples: int = 20,
    device: str = "cpu",
    seq_len: int = 96,
    max_windows: int | None = None,
) -> dict:
    from genloom.timeseries.forecast import load_forecaster_by_name
    from genloom.timeseries.models.official import load_official
    from genloom.timeseries.train import evaluate

    folder = Path(model) if model else None
    if folder is not None and (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        config = json.loads((folder / "config.json").read_text())
        net = load_official(folder).to(device)
        if config.get("model") == "GPHT":  # one model, any horizon: forecast autoregressively
            from genloom.timeseries.generative_protocol import score_gpht

            protocol = LongTermForecastProtocol(
                data, seq_len=config["seq_len"], label_len=0, pred_len=horizon
            )
            mse_, mae_ = score_gpht(net, protocol, device=device)
            return {
                "model": str(folder),
                "horizon": horizon,
                "mse": mse_,
                "mae": mae_,
                "n_windows": len(protocol.dataset("test")),
            }
        protocol = LongTermForecastProtocol(
            data, seq_len=config["seq_len"], label_len=config["label_len"], pred_len=config["pred_len"]
        )
        result = evaluate(net, protocol, "test", device=device)
        return {
            "model": str(folder),
            "horizon": config["pred_len"],
            "mse": result.mse,
            "mae": result.mae,
            "n_windows": result.n_windows,
        }
    if stride <= 0:
        raise SeriesInputError(f"stride must be positive, got {stride}")
    forecaster = load_forecaster_by_name(model, device=device, season=24)
    protocol = LongTermForecastProtocol(data, seq_len=seq_len, label_len=0, pred_len=horizon)
    windows = protocol.dataset("test")
    picks = list(range(0, len(windows), stride))[:max_windows]
    trues, medians, crps = [], [], []
    for i in picks:
        x, y, _, _ = windows[i]
        result = forecaster.forecast(x.T, horizon, num_samples=num_samples, seed=i)
        trues.append(y.T)
        medians.append(result.median)
        crps.append(crps_from_samples(y.T, result.samples))
    true, median = np.stack(trues), np.stack(medians)
    return {
        "model": model or "default preset",
        "horizon": horizon,
        "mse": mse(true, median),
        "mae": mae(true, median),
        "crps": float(np.mean(crps)),
        "n_windows": len(picks),
        "stride": stride,
    }
