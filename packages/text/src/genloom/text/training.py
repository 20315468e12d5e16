"""Training every text family with the one genloom trainer (`genloom.core.train.Trainer`).

A model is anything with `loss(batch, glance_ratio=...) -> Tensor`; batches come from a callable
`next_batch(generator)` so the same code trains on a synthetic task, a Markov source or Multi30k. What is
text-specific lives here only: the defaults of the text recipes (`text_train_config`), the GLAT glance
ratio annealed from the trainer's step inside the training step, and batches drawn from a generator seeded
by (seed, batch index), so a resumed run draws exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from genloom.core.errors import ConfigError
from genloom.core.train import TrainConfig, Trainer
from genloom.text.glat import GlanceSchedule
from genloom.text.tasks import Seq2SeqBatch

__all__ = ["TimeBudgetReached", "text_train_config", "train"]

_SEED_STRIDE = 1_000_003  # batch generators of different seeds never share a seed


def text_train_config(
    *,
    steps: int = 300,
    lr: float = 3e-3,
    warmup_steps: int = 30,
    weight_decay: float = 0.01,
    seed: int = 0,
    precision: str = "fp32",
    **overrides: Any,
) -> TrainConfig:
    """The core `TrainConfig` with the text recipes' defaults: AdamW betas (0.9, 0.98), linear warm-up
    (capped at `steps`), cosine decay to 10% of `lr`, clipping at 1.0, no progress bar (`progress=True`
    and any other core field can be passed as a keyword). `precision="auto"` uses bf16 autocast on CUDA."""
    fields: dict[str, Any] = dict(
        steps=steps,
        lr=lr,
        min_lr=0.1 * lr,
        warmup_steps=min(warmup_steps, steps),
        weight_decay=weight_decay,
        betas=(0.9, 0.98),
        clip_grad_norm=1.0,
        seed=seed,
        precision=precision,
        progress=False,
        log_every=max(1, min(50, steps)),
    )
    fields.update(overrides)
    return TrainConfig(**fields)


def _to_device(batch: Any, device: torch.device) -> Any:
    """Seq2SeqBatch (a dataclass the core mover leaves alone) and plain tensors onto `device`."""
    if isinstance(batch, Seq2SeqBatch):
        return dataclasses.replace(
            batch, **{f.name: getattr(batch, f.name).to(device) for f in dataclasses.fields(batch)}
        )
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch


class TimeBudgetReached(Exception):
    """Raised inside the training loop when a run's wall-clock budget is spent (caught by `train`)."""


class _LossAsForward(nn.Module):
    """Makes a text model's `loss` its forward, so that DDP / FSDP2 wrappers see the call that builds the
    graph (checkpoint weight names gain a `model.` prefix)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: object, glance_ratio: float) -> torch.Tensor:
        return self.model.loss(batch, glance_ratio=glance_ratio)


def train(
    model: nn.Module,
    next_batch: Callable[[torch.Generator], object],
    config: TrainConfig,
    *,
    glance: GlanceSchedule | None = None,
    on_step: Callable[[int, float], None] | None = None,
    time_budget_s: float | None = None,
) -> list[float]:
    """Train `model` in place with the core `Trainer`; returns the loss of every step (0-based order).

    `glance` anneals the GLAT glance ratio with the optimizer step (None: no glancing). `config.device`
    "auto" means the device the model's parameters are on. `on_step(step, loss)` is called for every
    (micro-)batch. `time_budget_s` stops the run before the first batch that would start after that many
    seconds (the schedule is not shortened: size `config.steps` to the budget; see the Multi30k benchmark),
    and no final checkpoint is written then. The model is left in eval mode.
    """
    if time_budget_s is not None and time_budget_s <= 0:
        raise ConfigError(f"time_budget_s must be > 0, got {time_budget_s}")
    if config.device == "auto":
        config = dataclasses.replace(config, device=str(next(model.parameters()).device))
    device = torch.device(config.device)
    step_losses: dict[int, list[float]] = {}
    trainer: Trainer | None = None

    def batch_at(index: int) -> object:
        generator = torch.Generator().manual_seed(config.seed * _SEED_STRIDE + index)
        return next_batch(generator)

    started = time.perf_counter()

    def training_step(module: nn.Module, batch: object) -> torch.Tensor:
        if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
            raise TimeBudgetReached
        step = trainer.step
        ratio = glance.ratio(step) if glance is not None else 0.0
        loss = module(_to_device(batch, device), ratio)
        value = loss.item()
        step_losses.setdefault(step, []).append(value)
        if on_step is not None:
            on_step(step, value)
        return loss

    trainer = Trainer(_LossAsForward(model), training_step, batch_at, config)
    try:
        trainer.fit(resume=config.out_dir is not None)
    except TimeBudgetReached:
        trainer.optimizer.zero_grad(set_to_none=True)
    model.eval()
    return [sum(values) / len(values) for _, values in sorted(step_losses.items())]
