"""Pretraining mix and zero-shot evaluation of the shipped generative forecaster.

The mix: statsmodels' bundled series (with their final stretch held out) and synthetic series (trend,
seasonality, regime switches, AR noise). Held-out cases: the last `horizon` steps of co2, El Nino and
sunspots, three macro series never seen in training, and synthetic series from unseen seeds. The metric
is MASE against the series' own seasonal-naive scale, compared with the seasonal-naive forecast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from genloom.timeseries.data.offline import statsmodels_series, synthetic_series
from genloom.timeseries.metrics import mase, seasonal_naive_forecast
from genloom.timeseries.train import fit_fixed_steps

HELDOUT_HORIZON = {"co2": 26, "elnino": 12, "sunspots": 11}
HELDOUT_WHOLE = ("macro_realinv", "macro_unemp", "macro_cpi")
HELDOUT_SYNTHETIC_SEEDS = (100_001, 100_002, 100_003, 100_004)


@dataclass
class ZeroShotCase:
    name: str
    history: np.ndarray
    future: np.ndarray
    season: int


def heldout_cases(context_len: int = 96) -> list[ZeroShotCase]:
    cases = []
    for s in statsmodels_series():
        if s.name in HELDOUT_HORIZON:
            h = HELDOUT_HORIZON[s.name]
            cases.append(ZeroShotCase(s.name, s.values[:-h], s.values[-h:], s.season))
        elif s.name in HELDOUT_WHOLE:
            cases.append(ZeroShotCase(s.name, s.values[:-8], s.values[-8:], s.season))
    for seed in HELDOUT_SYNTHETIC_SEEDS:
        s = synthetic_series(context_len + 24, seed)
        cases.append(ZeroShotCase(s.name, s.values[:-24], s.values[-24:], s.season))
    return cases


def training_pool(n_synthetic: int = 2000, length: int = 256) -> list[np.ndarray]:
    """Training series: statsmodels minus held-out parts, plus synthetic series (seeds 0..n-1)."""
    pool = []
    for s in statsmodels_series():
        if s.name in HELDOUT_WHOLE:
            continue
        values = s.values[: -HELDOUT_HORIZON[s.name]] if s.name in HELDOUT_HORIZON else s.values
        pool.append(values)
    pool += [synthetic_series(length, seed).values for seed in range(n_synthetic)]
    return pool


def sample_windows(
    pool: list[np.ndarray], batch_size: int, context_len: int, pred_len: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops of length context+pred (shorter context left-padded): values [B, T], mask [B, T]."""
    total = context_len + pred_len
    values = np.zeros((batch_size, total), dtype=np.float32)
    mask = np.zeros((batch_size, total), dtype=bool)
    for b in range(batch_size):
        series = pool[rng.integers(len(pool))]
        ctx = int(rng.integers(16, context_len + 1))
        length = min(ctx + pred_len, len(series))
        start = int(rng.integers(0, len(series) - length + 1))
        crop = series[start : start + length]
        values[b, total - length :] = crop
        mask[b, total - length :] = True
    return torch.from_numpy(values), torch.from_numpy(mask)


def pretrain(
    model,
    *,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 1e-3,
    pred_len: int = 32,
    seed: int = 0,
    pool: list[np.ndarray] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[float]:
    """Pretraining of a sampling forecaster (tokenised AR or diffusion, through its `pretrain_loss`) on the
    mix with the core Trainer (AdamW, 100 warm-up steps + cosine, clipping at 1); returns the loss curve."""
    rng = np.random.default_rng(seed)
    pool = pool if pool is not None else training_pool()
    device = str(next(model.parameters()).device)
    return fit_fixed_steps(
        model,
        lambda module, batch: module.pretrain_loss(*batch, pred_len),
        lambda _: sample_windows(pool, batch_size, model.context_len, pred_len, rng),
        steps=steps,
        lr=lr,
        warmup_steps=100,
        weight_decay=0.01,
        clip_grad_norm=1.0,
        seed=seed,
        device=device,
        log=log,
        name="pretrain",
    )


def zero_shot_mase(forecast_fn: Callable[[np.ndarray, int], np.ndarray], cases: list[ZeroShotCase]) -> dict:
    """MASE of `forecast_fn(history, horizon) -> point forecast` and of seasonal naive, per case."""
    rows = {}
    for case in cases:
        h = len(case.future)
        ours = forecast_fn(case.history, h)
        naive = seasonal_naive_forecast(case.history, h, case.season)
        rows[case.name] = (
            mase(case.future, ours, case.history, case.season),
            mase(case.future, naive, case.history, case.season),
        )
    return rows
