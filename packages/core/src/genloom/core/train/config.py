"""TrainConfig: every knob of the one genloom trainer, as a JSON-able dataclass checked on creation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from genloom.core.errors import ConfigError, check_field_names

Precision = Literal["auto", "bf16", "fp32"]
Strategy = Literal["auto", "none", "ddp", "fsdp2"]


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, checkpointing and distribution settings.

    The batch size is the user's data loader's; the effective batch per optimizer step is
    `loader batch x grad_accum x world size`. The learning rate warms up linearly over `warmup_steps`,
    then follows a cosine from `lr` down to `min_lr` at `steps` (`schedule="constant"` keeps `lr`).
    """

    steps: int = 1000
    lr: float = 3e-4
    min_lr: float = 0.0
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = 0.0  # applied to tensors with 2+ dims only (not biases or norm gains)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_accum: int = 1
    clip_grad_norm: float | None = 1.0
    ema_decay: float | None = None  # e.g. 0.999: keep (and save) an exponential moving average of weights
    precision: Precision = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    seed: int = 0
    log_every: int = 10
    # a non-finite loss raises FloatingPointError; checking it reads the loss back (a host sync that stalls
    # the GPU queue), so N > 1 checks every N steps (the weights may then have taken a non-finite update)
    check_finite_every: int = 1
    ckpt_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2  # newest N step folders kept; 0 keeps all
    out_dir: str | None = None  # checkpoints, metrics.jsonl; None: nothing written
    device: str = "auto"  # auto: cuda:<local rank> if CUDA is available, else cpu
    strategy: Strategy = "auto"  # auto: ddp when launched by torchrun with 2+ processes, else none
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, saved with the checkpoint

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (0 <= self.min_lr <= self.lr, f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}"),
            (
                0 <= self.warmup_steps <= self.steps,
                f"warmup_steps must be in [0, steps], got {self.warmup_steps}",
            ),
            (
                self.schedule in ("cosine", "constant"),
                f"schedule must be cosine or constant, got {self.schedule!r}",
            ),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (
                len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                f"betas must be two numbers in [0, 1), got {self.betas}",
            ),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (
                self.clip_grad_norm is None or self.clip_grad_norm > 0,
                f"clip_grad_norm must be > 0 or None, got {self.clip_grad_norm}",
            ),
            (
                self.ema_decay is None or 0 <= self.ema_decay < 1,
                f"ema_decay must be in [0, 1) or None, got {self.ema_decay}",
            ),
            (
                self.precision in ("auto", "bf16", "fp32"),
                f"precision must be auto, bf16 or fp32, got {self.precision!r}",
            ),
            (
                self.strategy in ("auto", "none", "ddp", "fsdp2"),
                f"strategy must be auto, none, ddp or fsdp2, got {self.strategy!r}",
            ),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (
                self.check_finite_every >= 1,
                f"check_finite_every must be >= 1, got {self.check_finite_every}",
            ),
            (self.ckpt_every >= 0, f"ckpt_every must be >= 0, got {self.ckpt_every}"),
            (self.keep_checkpoints >= 0, f"keep_checkpoints must be >= 0, got {self.keep_checkpoints}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"TrainConfig: {message}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are an error that names them."""
        check_field_names(cls, data)
        return cls(**data)
