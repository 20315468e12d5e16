"""Flow matching (Lipman et al. 2023; rectified flow, Liu et al. 2023): Euler and Heun ODE steps.

Convention: t runs from 0 (noise) to 1 (data) along the straight path x_t = (1 - t) noise + t data, and
the network predicts the velocity dx/dt (training target: data - noise). `set_steps(n)` builds a uniform
grid (or `shift` > 1 to spend more steps near the noise end, as SD3 does); `step(velocity, i, x)` moves
from grid point i to i + 1. Heun's second-order step needs the velocity at the end point too, so it takes
`velocity_fn(x, t)`; the `sample` loop handles both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from .errors import SamplingError

__all__ = ["flow_interpolate", "flow_velocity_target", "FlowMatchSampler"]

VelocityFn = Callable[[Tensor, Tensor], Tensor]


def flow_interpolate(noise: Tensor, data: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) noise + t data, with `t` [B] broadcast over the rows."""
    if noise.shape != data.shape:
        raise SamplingError(
            f"noise and data must have the same shape, got {tuple(noise.shape)} and {tuple(data.shape)}"
        )
    t = t.to(data.dtype).reshape(-1, *([1] * (data.dim() - 1)))
    return (1 - t) * noise + t * data


def flow_velocity_target(noise: Tensor, data: Tensor) -> Tensor:
    """The velocity the network regresses on the straight path: data - noise."""
    return data - noise


class FlowMatchSampler:
    """Deterministic ODE sampler for flow-matching models (`method` = "euler" or "heun")."""

    def __init__(self, *, method: Literal["euler", "heun"] = "euler", shift: float = 1.0) -> None:
        if method not in ("euler", "heun"):
            raise SamplingError(f"method must be 'euler' or 'heun', got {method!r}")
        if shift <= 0:
            raise SamplingError(f"shift must be > 0, got {shift}")
        self.method = method
        self.shift = shift
        self.num_steps: int | None = None
        self.times: Tensor | None = None

    def set_steps(self, num_steps: int) -> None:
        """Grid of n + 1 times from 0 to 1; with `shift` s the noise level sigma = 1 - t is warped to
        s sigma / (1 + (s - 1) sigma)."""
        if not isinstance(num_steps, int) or num_steps < 1:
            raise SamplingError(f"num_steps must be an int >= 1, got {num_steps!r}")
        sigma = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
        sigma = self.shift * sigma / (1 + (self.shift - 1) * sigma)
        self.num_steps = num_steps
        self.times = 1.0 - sigma

    @property
    def evaluations_per_step(self) -> int:
        return 2 if self.method == "heun" else 1

    def _interval(self, step_index: int) -> tuple[float, float]:
        if self.num_steps is None or self.times is None:
            raise SamplingError("call set_steps(n) before stepping the FlowMatchSampler")
        if not 0 <= step_index < self.num_steps:
            raise SamplingError(f"step_index must be in [0, {self.num_steps}), got {step_index}")
        return float(self.times[step_index]), float(self.times[step_index + 1])

    def step(
        self,
        velocity: Tensor,
        step_index: int,
        sample: Tensor,
        *,
        velocity_fn: VelocityFn | None = None,
    ) -> Tensor:
        """Advance `sample` from times[i] to times[i + 1] given the velocity at times[i]."""
        if velocity.shape != sample.shape:
            raise SamplingError(
                f"velocity must have the sample's shape {tuple(sample.shape)}, got {tuple(velocity.shape)}"
            )
        t, t_next = self._interval(step_index)
        dt = t_next - t
        euler = sample + dt * velocity
        if self.method == "euler":
            return euler
        if velocity_fn is None:
            raise SamplingError(
                "the Heun method needs velocity_fn(x, t) to evaluate the end point of each step"
            )
        end_velocity = velocity_fn(euler, torch.full((sample.shape[0],), t_next, device=sample.device))
        return sample + dt * 0.5 * (velocity + end_velocity)

    def sample(self, velocity_fn: VelocityFn, noise: Tensor) -> Tensor:
        """Integrate from `noise` at t = 0 to t = 1 with `velocity_fn(x, t[B]) -> velocity`."""
        if self.num_steps is None or self.times is None:
            raise SamplingError("call set_steps(n) before sampling with the FlowMatchSampler")
        x = noise
        for i in range(self.num_steps):
            t = torch.full((x.shape[0],), float(self.times[i]), device=x.device)
            x = self.step(velocity_fn(x, t), i, x, velocity_fn=velocity_fn)
        return x
