"""Glancing training (GLAT, Qian et al. 2021): reveal some target tokens to the decoder, more when it is wrong.

The number of revealed tokens is `ratio x (number of wrongly predicted tokens)`, rounded, chosen
uniformly at random among the target positions (the official "number-random" strategy); the ratio is
annealed linearly over training. For DA-Transformer and CTC the target positions are first mapped to
decoder positions through the best alignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genloom.text.errors import TextInputError


@dataclass(frozen=True)
class GlanceSchedule:
    """Glance ratio annealed linearly from `start` to `end` over `anneal_steps` updates, then held."""

    start: float = 0.5
    end: float = 0.1
    anneal_steps: int = 200_000

    def __post_init__(self) -> None:
        if not (0.0 <= self.end <= 1.0 and 0.0 <= self.start <= 1.0):
            raise TextInputError(f"glance ratios must lie in [0, 1], got start={self.start}, end={self.end}")
        if self.anneal_steps < 0:
            raise TextInputError(f"anneal_steps must be >= 0, got {self.anneal_steps}")

    def ratio(self, step: int) -> float:
        """The glance ratio at training step `step`."""
        if self.anneal_steps == 0:
            return self.end
        progress = min(max(step / self.anneal_steps, 0.0), 1.0)
        return self.start + (self.end - self.start) * progress


def glancing_mask(
    correct: Tensor, valid: Tensor, ratio: float, *, generator: torch.Generator | None = None
) -> Tensor:
    """Choose which target positions to reveal.

    correct [B, T] bool: the model's (aligned) prediction equals the target there; valid [B, T] bool:
    real (non-pad) target positions. Returns [B, T] bool with round(ratio * #wrong) True entries per row,
    drawn uniformly among the valid positions.
    """
    if correct.shape != valid.shape:
        raise TextInputError(
            f"correct and valid must have the same shape, got {correct.shape} vs {valid.shape}"
        )
    num_wrong = (valid & ~correct).sum(1)
    num_glance = (num_wrong.float() * ratio + 0.5).long()
    # drawn where the mask lives (a CPU draw copied to the GPU would stall it every step); a `generator`
    # is a CPU generator, so reproducible draws stay on the CPU
    if generator is None:
        noise = torch.rand(valid.shape, device=valid.device)
    else:
        noise = torch.rand(valid.shape, generator=generator, device="cpu").to(valid.device)
    noise = noise.masked_fill(~valid, -1.0)
    rank = noise.argsort(dim=1, descending=True).argsort(dim=1)
    return (rank < num_glance.unsqueeze(1)) & valid


def aligned_glance_inputs(
    decoder_tokens: Tensor, alignment: Tensor, targets: Tensor, reveal: Tensor
) -> tuple[Tensor, Tensor]:
    """Write revealed target tokens into the decoder positions aligned to them.

    decoder_tokens [B, L]; alignment [B, L] target index per decoder position or -1; targets [B, T];
    reveal [B, T] bool. Returns (new decoder tokens [B, L], revealed decoder positions [B, L] bool).
    """
    aligned = alignment >= 0
    index = alignment.clamp(min=0)
    revealed = aligned & reveal.gather(1, index)
    return torch.where(revealed, targets.gather(1, index), decoder_tokens), revealed
