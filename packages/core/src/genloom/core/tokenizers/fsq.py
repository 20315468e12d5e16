"""Finite scalar quantisation (FSQ, Mentzer et al. 2023, arXiv:2309.15505).

Each channel is bounded to a fixed number of levels and rounded; the codebook is the implicit grid of
all level combinations, so its size is prod(levels) and no codebook is learned (no collapse, no aux
loss). With levels L, channel values lie on {(k - L//2) / (L//2) : k = 0..L-1}, e.g. L=5 gives
{-1, -0.5, 0, 0.5, 1} and L=8 gives {-1, -0.75, ..., 0.75}. Token id = mixed-radix number of the levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from genloom.core.tokenizers.base import (
    Quantizer,
    QuantizerOutput,
    check_features,
    check_indices,
    codebook_projections,
    move_channels_back,
    move_channels_last,
    perplexity_from_counts,
    product,
)

# Batch perplexity is reported up to this codebook size (a histogram per call beyond it costs too much).
_MAX_COUNTED_CODES = 1 << 20


def round_ste(x: Tensor) -> Tensor:
    """Round to the nearest integer with a straight-through (identity) gradient."""
    return x + (torch.round(x) - x).detach()


class FSQ(Quantizer):
    """Finite scalar quantizer over `levels` (for example [8, 5, 5, 5] -> 1000 codes).

    Args:
        levels: number of levels of every quantized channel (each >= 2).
        dim: channels of the input; a Linear projection to len(levels) channels (and back) is added
            when it differs. Defaults to len(levels).
        channel_dim: 1 for [B, C, H, W], -1 for [B, T, D].
        eps: widens the tanh bound slightly so that the outermost levels are reached (and L=2 works).
    """

    def __init__(
        self,
        *,
        levels: Sequence[int] = (8, 5, 5, 5),
        dim: int | None = None,
        channel_dim: int = -1,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must be a non-empty list of ints >= 2, got {levels}")
        self.levels = levels
        self.codebook_dim = len(levels)
        self.dim = dim or self.codebook_dim
        self.channel_dim = channel_dim
        self.eps = eps
        self.codebook_size = product(levels)

        level_t = torch.tensor(levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.long), dim=0)
        self.register_buffer("_levels", level_t, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_half_width", torch.floor(level_t / 2), persistent=False)

        self.project_in, self.project_out = codebook_projections(self.dim, self.codebook_dim)

    def bound(self, z: Tensor) -> Tensor:
        """Squash every channel into (-L//2 - 0.5, L//2 + 0.5) (even L shifted by half a level) with tanh."""
        half_l = (self._levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: Tensor) -> Tensor:
        """Bounded, rounded and normalised codes in [-1, 1] (channels last), straight-through."""
        return round_ste(self.bound(z)) / self._half_width

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_features(z, channels=self.dim, channel_dim=self.channel_dim, name="FSQ")
        z_e = self.project_in(move_channels_last(z, self.channel_dim))
        codes = self.quantize(z_e.float())
        indices = self.codes_to_indices(codes, channels_last=True)
        out = move_channels_back(self.project_out(codes.to(z_e.dtype)), self.channel_dim)
        metrics = {}
        if self.codebook_size <= _MAX_COUNTED_CODES:
            counts = torch.bincount(indices.flatten(), minlength=self.codebook_size)
            metrics["perplexity"] = perplexity_from_counts(counts)
        return QuantizerOutput(out, indices, z.new_zeros(()), metrics)

    def codes_to_indices(self, codes: Tensor, *, channels_last: bool = False) -> Tensor:
        """Token ids of normalised grid codes (the exact inverse of `indices_to_codes` without projection)."""
        if not channels_last:
            codes = move_channels_last(codes, self.channel_dim)
        digits = torch.round(codes.float() * self._half_width + self._half_width).long()
        return (digits * self._basis).sum(dim=-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        check_indices(indices, vocab_size=self.codebook_size, name="FSQ")
        digits = (indices.long().unsqueeze(-1) // self._basis) % self._levels.long()
        codes = (digits.float() - self._half_width) / self._half_width
        return move_channels_back(self.project_out(codes), self.channel_dim)

    def implicit_codebook(self) -> Tensor:
        """All prod(levels) codes in index order, [codebook_size, len(levels)] (before projection)."""
        indices = torch.arange(self.codebook_size, device=self._basis.device)
        digits = (indices.unsqueeze(-1) // self._basis) % self._levels.long()
        return (digits.float() - self._half_width) / self._half_width

    def extra_repr(self) -> str:
        return f"levels={self.levels}, dim={self.dim}, codebook_size={self.codebook_size}"
