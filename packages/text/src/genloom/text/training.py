"""Training every text family with the one genloom trainer (`genloom.core.train.Trainer`).

A model is anything with `loss(batch, glance_ratio=...) -> Tensor`; batches come from a callable
`next_batch(generator)` so the same code trains on a synthetic task, a Markov source or Multi30k. What is
text-specific lives here only: the defaults of the text recipes (`text_train_config`), the GLAT glance
ratio annealed from the trainer's step inside the training step, and batches drawn from a generator seeded
by (seed, batch index) or taken by index from an `IndexedBatches` source, so a resumed run draws exactly
the batches of an uninterrupted one.

The training step keeps the loss on the device (no host sync per step): the per-step losses are read back
once, at the end, and `on_step` sees a float only every `on_step_every` steps. Runs under a wall-clock
budget can follow it (`schedule_by_time`): the learning rate and glance ratio are functions of the elapsed
fraction of the budget, so the run ends annealed whatever throughput the machine gives (the schedule is the
core one, `genloom.core.train.lr_at` given that fraction). The seconds spent are stored in every checkpoint,
so a resumed run continues the budget and the schedule where they were instead of starting them again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from genloom.core.errors import ConfigError
from genloom.core.train import TrainConfig, Trainer, lr_at
from genloom.text.glat import GlanceSchedule
from genloom.text.tasks import Seq2SeqBatch

__all__ = ["IndexedBatches", "TimeBudgetReached", "text_train_config", "train"]

_SEED_STRIDE = 1_000_003  # batch generators of different seeds never share a seed
_clock = time.perf_counter  # the wall clock of time budgets (tests replace it)


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


@runtime_checkable
class IndexedBatches(Protocol):
    """A batch source addressed by batch index (e.g. `corpus.BucketedBatches`): batches prepared up front,
    no generator per step."""

    def batch(self, index: int) -> object: ...


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
    next_batch: Callable[[torch.Generator], object] | IndexedBatches,
    config: TrainConfig,
    *,
    glance: GlanceSchedule | None = None,
    on_step: Callable[[int, float], None] | None = None,
    on_step_every: int = 1,
    time_budget_s: float | None = None,
    schedule_by_time: bool = False,
) -> list[float]:
    """Train `model` in place with the core `Trainer`; returns the loss of every step (0-based order).

    `next_batch(generator)` draws a batch from a generator seeded by (seed, batch index), or `next_batch`
    is an `IndexedBatches` whose `batch(index)` is used directly. `glance` anneals the GLAT glance ratio
    with the optimizer step (None: no glancing). `config.device` "auto" means the device the model's
    parameters are on. `on_step(step, loss)` is called for every (micro-)batch of every `on_step_every`-th
    step (each call reads the loss back from the device). `time_budget_s` stops the run before the first
    batch that would start more than that many seconds after the first one (set-up is not counted, and at
    least one step runs), and no final checkpoint is written then. Without
    `schedule_by_time` the schedule is not shortened (size `config.steps` to the budget); with it the
    learning rate (core's `lr_at` with `progress=`) and the glance ratio follow the progress
    max(elapsed / budget, step / config.steps), so `config.steps` becomes a cap. Checkpoints store the
    elapsed seconds: a run resumed from one counts them as spent (the budget and the schedule go on from
    there; if they already exceed the budget, no step runs). With `config.ema_decay` the model ends holding
    the exponential moving average of its weights. The model is left in eval mode.
    """
    if time_budget_s is not None and time_budget_s <= 0:
        raise ConfigError(f"time_budget_s must be > 0, got {time_budget_s}")
    if schedule_by_time and time_budget_s is None:
        raise ConfigError("schedule_by_time needs time_budget_s")
    if on_step_every < 1:
        raise ConfigError(f"on_step_every must be >= 1, got {on_step_every}")
    if config.device == "auto":
        config = dataclasses.replace(config, device=str(next(model.parameters()).device))
    device = torch.device(config.device)
    step_losses: dict[int, list[torch.Tensor]] = {}
    trainer: Trainer | None = None

    def batch_at(index: int) -> object:
        if isinstance(next_batch, IndexedBatches):
            return next_batch.batch(index)
        generator = torch.Generator().manual_seed(config.seed * _SEED_STRIDE + index)
        return next_batch(generator)

    # when the first training step began (minus the seconds spent before a resume): set-up does not eat the
    # budget, and a resumed run goes on from the seconds its checkpoint stored
    started: list[float] = []

    def elapsed() -> float:
        if not started:
            spent = float(trainer.restored_extra_state.get("elapsed_s", 0.0))
            started.append(_clock() - spent)
        return _clock() - started[0]

    def progress(step: int) -> float:
        return max(elapsed() / time_budget_s, step / config.steps)

    def training_step(module: nn.Module, batch: object) -> torch.Tensor:
        if time_budget_s is not None and elapsed() > time_budget_s:
            raise TimeBudgetReached
        step = trainer.step
        if schedule_by_time:
            done = progress(step)
            for group in trainer.optimizer.param_groups:  # overrides the trainer's step-based scheduler
                group["lr"] = lr_at(step, config, progress=done)
            ratio = glance.ratio(done * glance.anneal_steps) if glance is not None else 0.0
        else:
            ratio = glance.ratio(step) if glance is not None else 0.0
        loss = module(_to_device(batch, device), ratio)
        step_losses.setdefault(step, []).append(loss.detach().float())
        if on_step is not None and step % on_step_every == 0:
            on_step(step, loss.item())
        return loss

    trainer = Trainer(
        _LossAsForward(model), training_step, batch_at, config, extra_state=lambda: {"elapsed_s": elapsed()}
    )
    try:
        trainer.fit(resume=config.out_dir is not None)
    except TimeBudgetReached:
        trainer.optimizer.zero_grad(set_to_none=True)
    if trainer.ema is not None:  # the averaged weights are the ones to evaluate and ship
        trainer.ema.copy_to(trainer.module)
    model.eval()
    return _mean_losses(step_losses)


def _mean_losses(step_losses: dict[int, list[torch.Tensor]]) -> list[float]:
    """Mean micro-batch loss of each step, in step order, read back from the device in one transfer."""
    if not step_losses:
        return []
    means = [torch.stack(values).mean() for _, values in sorted(step_losses.items())]
    return torch.stack(means).tolist()
