"""Classifier-free guidance: combine conditional and unconditional outputs, with a scale schedule.

`guided = uncond + scale * (cond - uncond)` works for logits, noise / velocity predictions or any tensor.
The scale can be constant or follow a `GuidanceSchedule` over the sampling progress t in [0, 1]
(MAR ramps linearly from 1 to the target as tokens are revealed, VAR ramps from 0 over its scales,
MDT uses a power-cosine curve). The batched helpers run both branches in one forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .errors import SamplingError

__all__ = [
    "GuidanceSchedule",
    "apply_guidance",
    "double_batch",
    "split_batch",
    "guide_batched",
]

ScheduleKind = Literal["constant", "linear", "cosine", "power", "power_cosine"]
_KINDS = ("constant", "linear", "cosine", "power", "power_cosine")


def apply_guidance(cond: Tensor, uncond: Tensor, scale: float | Tensor) -> Tensor:
    """Return `uncond + scale * (cond - uncond)`; a tensor scale of shape [B] is broadcast per row."""
    if cond.shape != uncond.shape:
        raise SamplingError(
            f"cond and uncond must have the same shape, got {tuple(cond.shape)} and {tuple(uncond.shape)}"
        )
    if isinstance(scale, Tensor) and scale.dim() > 0:
        if scale.dim() != 1 or scale.shape[0] != cond.shape[0]:
            raise SamplingError(
                f"a tensor guidance scale must have shape [B={cond.shape[0]}], got {tuple(scale.shape)}"
            )
        scale = scale.to(cond.dtype).reshape(-1, *([1] * (cond.dim() - 1)))
    return uncond + scale * (cond - uncond)


@dataclass
class GuidanceSchedule:
    """Guidance scale as a function of sampling progress t in [0, 1] (0 = first step, 1 = last).

    scale(t) = start + (scale - start) * f(t) with f: constant 1, linear t, cosine (1 - cos(pi t)) / 2,
    power t**exponent, power_cosine (1 - cos(pi t**exponent)) / 2 (MDT). `start=1.0` is MAR's linear
    ramp (no guidance at the start), `start=0.0` is VAR's.
    """

    scale: float = 1.0
    kind: ScheduleKind = "constant"
    start: float = 1.0
    exponent: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise SamplingError(f"unknown guidance schedule kind {self.kind!r}; expected one of {_KINDS}")
        for name in ("scale", "start", "exponent"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise SamplingError(f"GuidanceSchedule.{name} must be a finite number, got {value!r}")
        if self.exponent <= 0:
            raise SamplingError(f"GuidanceSchedule.exponent must be > 0, got {self.exponent}")

    def _ramp(self, t: float | Tensor) -> float | Tensor:
        lib = torch if isinstance(t, Tensor) else math
        if self.kind == "constant":
            return 1.0
        if self.kind == "linear":
            return t
        if self.kind == "cosine":
            return (1 - lib.cos(math.pi * t)) / 2
        if self.kind == "power":
            return t**self.exponent
        return (1 - lib.cos(math.pi * t**self.exponent)) / 2

    def at(self, progress: float | Tensor) -> float | Tensor:
        """The scale at progress t in [0, 1] (a float, or a tensor of per-row progress)."""
        if isinstance(progress, Tensor):
            progress = progress.clamp(0.0, 1.0)
        else:
            if not 0.0 <= float(progress) <= 1.0:
                raise SamplingError(f"guidance progress must be in [0, 1], got {progress}")
        return self.start + (self.scale - self.start) * self._ramp(progress)

    def at_step(self, step_index: int, num_steps: int) -> float:
        """The scale at step i of n, with progress i / (n - 1) (the first step is 0, the last 1)."""
        if num_steps < 1 or not 0 <= step_index < num_steps:
            raise SamplingError(f"step_index must be in [0, {num_steps}), got {step_index}")
        progress = step_index / (num_steps - 1) if num_steps > 1 else 1.0
        return float(self.at(progress))


def double_batch(cond: Tensor, uncond: Tensor | None = None) -> Tensor:
    """Stack the conditional batch on top of the unconditional one ([2B, ...]); `uncond` defaults to
    `cond` (for inputs shared by both branches, such as the noisy sample)."""
    uncond = cond if uncond is None else uncond
    if cond.shape != uncond.shape:
        raise SamplingError(
            f"cond and uncond inputs must have the same shape, got {tuple(cond.shape)} and {tuple(uncond.shape)}"
        )
    return torch.cat([cond, uncond], dim=0)


def split_batch(output: Tensor) -> tuple[Tensor, Tensor]:
    """Split a doubled output [2B, ...] into (cond [B, ...], uncond [B, ...])."""
    if output.shape[0] % 2:
        raise SamplingError(
            f"a doubled CFG batch must have an even first dimension, got {tuple(output.shape)}"
        )
    cond, uncond = output.chunk(2, dim=0)
    return cond, uncond


def guide_batched(output: Tensor, scale: float | Tensor) -> Tensor:
    """Split a doubled output and apply guidance: [2B, ...] -> [B, ...]."""
    cond, uncond = split_batch(output)
    return apply_guidance(cond, uncond, scale)
