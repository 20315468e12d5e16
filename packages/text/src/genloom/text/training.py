"""One training function for every text family: AdamW, linear warm-up then cosine decay, clipping, glancing.

A model is anything with `loss(batch, glance_ratio=...) -> Tensor`; batches come from a callable so the
same loop trains on a synthetic task, a Markov source or Multi30k.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from genloom.text.errors import TextInputError
from genloom.text.glat import GlanceSchedule


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; `glance=None` disables glancing (GLAT) training."""

    steps: int = 300
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    glance: GlanceSchedule | None = None
    seed: int = 0
    autocast_bf16: bool = False  # bf16 autocast for the forward pass (GPU); DAG / CTC losses stay float32

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.warmup_steps < 0:
            raise TextInputError(f"need steps >= 1, lr > 0, warmup_steps >= 0; got {self}")


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up to `lr`, then cosine decay to 10% of it at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train(
    model: nn.Module,
    next_batch: Callable[[torch.Generator], object],
    config: TrainConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train `model` in place for `config.steps` steps; returns the loss of every step."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
    )
    model.train()
    losses = []
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        ratio = config.glance.ratio(step) if config.glance is not None else 0.0
        batch = next_batch(generator)
        device_type = next(model.parameters()).device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.autocast_bf16):
            loss = model.loss(batch, glance_ratio=ratio)
        if not torch.isfinite(loss):
            raise TextInputError(f"non-finite loss {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_norm:
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses
