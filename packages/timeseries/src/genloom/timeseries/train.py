"""Training of the timeseries models.

- `fit_fixed_steps`: the generic loop (AdamW, warm-up + cosine, gradient clipping, a fixed number of
  steps, optionally cut to a wall-clock budget) of the pretrained and generative forecasters runs on
  `genloom.core.train.Trainer`.
- `train_supervised` / `evaluate`: the long-term forecasting protocol as the TSLib experiment class runs
  it: decoder input = label_len known steps + zeros, MSE on the last pred_len steps, plain Adam with the
  "type1" halving of the learning rate after every epoch, validation after every epoch, early stopping
  with patience, test metrics on the scaled values with the best-validation weights. This loop stays
  here, thin and protocol-specific: the core Trainer runs a fixed number of optimizer steps with a
  step-indexed schedule and has no per-epoch validation, no early stopping and no epoch-indexed lr
  changes, and the baselines' parity with the official runs needs Adam without clipping or weight decay.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from genloom.core.errors import ConfigError
from genloom.core.train import TrainConfig, Trainer, seed_everything
from genloom.timeseries.data.protocol import LongTermForecastProtocol, Split, collate_float32
from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.recipes import TrainRecipe

__all__ = [
    "EvalResult",
    "TrainResult",
    "decoder_input",
    "evaluate",
    "fit_fixed_steps",
    "seed_everything",
    "train_supervised",
]


class _TimeBudgetSpent(Exception):
    """Raised inside a training step once the wall-clock budget of `fit_fixed_steps` is spent."""


def _probe_step_seconds(
    model: nn.Module, loss_fn: Callable, get_batch: Callable, config: TrainConfig, probe_steps: int
) -> float:
    """Seconds per optimizer step, timed over the second half of `probe_steps` steps on a copy of `model`
    (the first half absorbs allocator and kernel warm-up)."""
    stamps: list[float] = []

    def timed_step(module: nn.Module, batch: Any) -> torch.Tensor:
        stamps.append(time.perf_counter())
        return loss_fn(module, batch)

    probe = TrainConfig(**{**config.to_dict(), "steps": probe_steps, "warmup_steps": 0})
    Trainer(copy.deepcopy(model), timed_step, get_batch, probe).fit(resume=False)
    half = probe_steps // 2
    return (stamps[-1] - stamps[half]) / max(1, probe_steps - 1 - half)


def fit_fixed_steps(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    get_batch: Callable[[int], Any],
    *,
    steps: int,
    lr: float,
    warmup_steps: int = 0,
    weight_decay: float = 0.01,
    clip_grad_norm: float | None = 1.0,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] | None = print,
    log_every: int = 250,
    name: str = "train",
    time_budget_s: float | None = None,
    probe_steps: int = 20,
) -> list[float]:
    """Train `model` for `steps` AdamW steps (betas 0.9/0.999; linear warm-up then cosine to 0) on
    `loss_fn(model, get_batch(step))` with `genloom.core.train.Trainer`; returns the loss of every step.
    The model ends in eval mode.

    `time_budget_s` caps the wall clock: `probe_steps` steps on a copy of the model time one step, `steps`
    is lowered to what fits in the rest of the budget (10 % margin; the schedule then spans the steps that
    run) and training stops early, with a logged note, if it still runs past the budget."""
    started = time.perf_counter()
    base = dict(
        lr=lr,
        weight_decay=weight_decay,
        betas=(0.9, 0.999),
        clip_grad_norm=clip_grad_norm,
        seed=seed,
        device=device,
        progress=False,
    )
    if time_budget_s is not None:
        if time_budget_s <= 0:
            raise ConfigError(f"time_budget_s must be positive, got {time_budget_s}")
        probe = TrainConfig(steps=max(2, probe_steps), **base)
        step_seconds = _probe_step_seconds(model, loss_fn, get_batch, probe, max(2, probe_steps))
        left = time_budget_s - (time.perf_counter() - started)
        fitted = max(1, min(steps, int(0.9 * left / max(step_seconds, 1e-9))))
        if log:
            log(f"{name}: {step_seconds * 1e3:.1f} ms/step, {fitted} of {steps} steps fit {left:.0f} s")
        warmup_steps = round(warmup_steps * fitted / steps)
        steps = fitted
    config = TrainConfig(
        steps=steps,
        warmup_steps=min(warmup_steps, steps),
        log_every=max(1, min(log_every, steps)),
        **base,
    )
    deadline = None if time_budget_s is None else started + time_budget_s
    losses: list[torch.Tensor] = []
    start = time.time()

    def training_step(module: nn.Module, batch: Any) -> torch.Tensor:
        if deadline is not None and losses and time.perf_counter() > deadline:  # one step at least
            raise _TimeBudgetSpent
        loss = loss_fn(module, batch)
        losses.append(loss.detach())
        if log and len(losses) % log_every == 0:
            recent = torch.stack(losses[-log_every:]).float().mean().item()
            log(f"{name} step {len(losses)}/{steps}: loss {recent:.3f} ({time.time() - start:.0f}s)")
        return loss

    try:
        Trainer(model, training_step, get_batch, config).fit(resume=False)
    except _TimeBudgetSpent:
        if log:
            log(f"{name}: time budget of {time_budget_s:.0f} s spent after {len(losses)} of {steps} steps")
    model.eval()
    return torch.stack(losses).float().cpu().tolist()


def decoder_input(batch_y: torch.Tensor, label_len: int, pred_len: int) -> torch.Tensor:
    """label_len known steps followed by pred_len zeros (what the TSLib experiments feed the decoder)."""
    return torch.cat([batch_y[:, :label_len], torch.zeros_like(batch_y[:, -pred_len:])], dim=1)


@dataclass
class EvalResult:
    mse: float
    mae: float
    n_windows: int


@dataclass
class TrainResult:
    best_val_mse: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _loader(
    protocol: LongTermForecastProtocol, split: Split, batch_size: int, shuffle: bool, drop_last: bool = False
) -> DataLoader:
    return DataLoader(
        protocol.dataset(split),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        collate_fn=collate_float32,
    )


def _forward(model: nn.Module, batch, protocol: LongTermForecastProtocol, device: str):
    x, y, x_mark, y_mark = (t.to(device) for t in batch)
    dec_in = decoder_input(y, protocol.label_len, protocol.pred_len)
    out = model(x, x_mark, dec_in, y_mark)
    f_dim = -1 if protocol.features == "MS" else 0
    return out[:, -protocol.pred_len :, f_dim:], y[:, -protocol.pred_len :, f_dim:]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    protocol: LongTermForecastProtocol,
    split: Split = "test",
    *,
    batch_size: int = 32,
    device: str = "cpu",
    max_batches: int | None = None,
) -> EvalResult:
    """MSE and MAE on the scaled values, averaged over every window of the split (TSLib `test`)."""
    model.eval()
    sq, ab, count, windows = 0.0, 0.0, 0, 0
    for i, batch in enumerate(_loader(protocol, split, batch_size, shuffle=False)):
        if max_batches is not None and i >= max_batches:
            break
        pred, true = _forward(model, batch, protocol, device)
        diff = (pred - true).double()
        sq += float((diff**2).sum())
        ab += float(diff.abs().sum())
        count += diff.numel()
        windows += diff.shape[0]
    return EvalResult(mse=sq / count, mae=ab / count, n_windows=windows)


@torch.no_grad()
def batch_mean_mse(
    model: nn.Module,
    protocol: LongTermForecastProtocol,
    split: Split,
    batch_size: int,
    *,
    device: str = "cpu",
) -> float:
    """TSLib's `vali`: the mean of per-batch MSEs over shuffled batches, the last partial batch dropped."""
    model.eval()
    losses = [
        float(F.mse_loss(*_forward(model, batch, protocol, device)))
        for batch in _loader(protocol, split, batch_size, shuffle=True, drop_last=True)
    ]
    if not losses:
        raise SeriesInputError(f"the {split} split has fewer than one batch of {batch_size} windows")
    return float(np.mean(losses))


def next_epoch_lr(recipe: TrainRecipe, finished_epochs: int) -> float | None:
    """The learning rate after `finished_epochs` (>= 1) epochs, by the recipe's `lradj` (None: leave it).

    "type1" (TSLib): base * 0.5 ** (finished - 1), halved every epoch. "type3" (PatchTST's repository): the
    base rate while fewer than 3 epochs are finished, then base * 0.9 ** (finished - 3)."""
    if recipe.lradj == "type1":
        return recipe.learning_rate * 0.5 ** (finished_epochs - 1)
    if recipe.lradj == "type3":
        return recipe.learning_rate * (1.0 if finished_epochs < 3 else 0.9 ** (finished_epochs - 3))
    return None


def train_supervised(
    model: nn.Module,
    protocol: LongTermForecastProtocol,
    recipe: TrainRecipe,
    *,
    device: str = "cpu",
    max_batches_per_epoch: int | None = None,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train with early stopping on validation MSE; the model ends with its best-validation weights.
    Seeds with `recipe.seed` first unless it is None (then the random stream continues). TSLib's run.py
    seeds once per process before it builds the model, and its `--itr` repeats continue the stream: to
    follow it, call `seed_everything(seed)`, build the model, then train with `seed=None` (the benchmark
    does; with `tslib_loaders` its CPU runs then equal TSLib's to float precision, docs/timeseries.md)."""
    if recipe.seed is not None:
        seed_everything(recipe.seed)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    criterion = nn.MSELoss()
    best_val, best_state, bad_epochs = float("inf"), None, 0
    history: list[dict[str, float]] = []
    start = time.time()
    epoch = 0
    for epoch in range(recipe.train_epochs):
        model.train()
        losses = []
        batches = _loader(protocol, "train", recipe.batch_size, shuffle=True, drop_last=recipe.tslib_loaders)
        for i, batch in enumerate(batches):
            if max_batches_per_epoch is not None and i >= max_batches_per_epoch:
                break
            optimizer.zero_grad(set_to_none=True)
            pred, true = _forward(model, batch, protocol, device)
            loss = criterion(pred, true)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if not losses:  # TSLib's loaders drop a partial batch: a split smaller than one batch trains nothing
            raise SeriesInputError(
                f"the train split has fewer than one batch of {recipe.batch_size} windows "
                "(a smaller batch_size, or tslib_loaders=False to keep a partial batch)"
            )
        if recipe.tslib_loaders:
            val_mse = batch_mean_mse(model, protocol, "val", recipe.batch_size, device=device)
            # TSLib's loop also scores the test split after every epoch (only to print it). Opening that
            # loader's iterator draws its base seed from the global torch RNG, so open it too: the later
            # epochs then shuffle as TSLib's do, and a run seeded as TSLib's run.py seeds (once, before
            # the model is built) is that run, batch for batch.
            iter(_loader(protocol, "test", recipe.batch_size, shuffle=False))
        else:
            val_mse = evaluate(model, protocol, "val", batch_size=recipe.batch_size, device=device).mse
        history.append({"epoch": epoch + 1, "train_mse": float(np.mean(losses)), "val_mse": val_mse})
        if log:
            log(
                f"epoch {epoch + 1}: train {np.mean(losses):.4f} val {val_mse:.4f} ({time.time() - start:.0f}s)"
            )
        if val_mse < best_val:
            best_val, best_state, bad_epochs = val_mse, copy.deepcopy(model.state_dict()), 0
        else:
            bad_epochs += 1
            if bad_epochs >= recipe.patience:
                break
        lr = next_epoch_lr(recipe, epoch + 1)
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(
        best_val_mse=best_val, epochs_run=epoch + 1, history=history, seconds=time.time() - start
    )
