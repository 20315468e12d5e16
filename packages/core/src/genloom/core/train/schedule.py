"""Learning-rate schedule: linear warm-up, then cosine decay to a floor (or constant)."""

from __future__ import annotations

import math

import torch

from genloom.core.train.config import TrainConfig


def lr_at(step: int, config: TrainConfig, *, progress: float | None = None) -> float:
    """Learning rate for optimizer step `step` (0-based) under `config`'s schedule.

    Linear warm-up over `config.warmup_steps` optimizer steps, then `config.lr` (constant) or a cosine from
    `config.lr` to `config.min_lr` over the progress of the run: by default the steps after the warm-up
    divided by those left to `config.steps`; `progress` in [0, 1] (clamped) replaces it, e.g. the fraction
    of a wall-clock budget spent (text's `train(schedule_by_time=True)`)."""
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    if progress is None:
        decay_steps = max(1, config.steps - config.warmup_steps)
        progress = (step - config.warmup_steps) / decay_steps
    progress = min(max(progress, 0.0), 1.0)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose factor reproduces `lr_at` (the optimizer's base lr must be `config.lr`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, config) / config.lr)
