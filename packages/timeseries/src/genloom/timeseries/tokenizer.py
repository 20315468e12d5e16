"""Scale-and-bin tokenizer of real values (Chronos, Ansari et al. 2024): scale each series by its context,
clip to [-limit, limit], map to one of `n_bins` uniform bins; tokens 0..n_special-1 are special (PAD).

scaling="mean": divide by the mean absolute context value (Chronos). scaling="standard": subtract the
context mean and divide by its std (instance normalisation, as Chronos-Bolt and the TSLib baselines);
it keeps the resolution of series with a large offset (co2 at ~330 ppm moves by ~1 %).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch

from genloom.timeseries.errors import SeriesInputError

PAD_ID = 0


@dataclass
class BinTokenizerConfig:
    n_bins: int = 1024
    limit: float = 5.0
    scaling: Literal["mean", "standard"] = "standard"
    n_special: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


class ScaleBinTokenizer:
    """encode(values [B, T], mask) -> (tokens [B, T] long, loc [B, 1], scale [B, 1]); decode(tokens, loc, scale)."""

    def __init__(self, config: BinTokenizerConfig | None = None):
        self.config = config or BinTokenizerConfig()
        if self.config.scaling not in ("mean", "standard"):
            raise SeriesInputError(f"scaling must be 'mean' or 'standard', got {self.config.scaling!r}")
        c = self.config
        self.edges = torch.linspace(-c.limit, c.limit, c.n_bins + 1)
        self.centers = (self.edges[1:] + self.edges[:-1]) / 2

    @property
    def vocab_size(self) -> int:
        return self.config.n_bins + self.config.n_special

    def fit_scale(
        self, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale per series from the observed (mask=True) context values."""
        mask = torch.ones_like(context, dtype=torch.bool) if mask is None else mask
        weight = mask.to(context.dtype)
        count = weight.sum(-1, keepdim=True).clamp_min(1.0)
        if self.config.scaling == "mean":
            loc = torch.zeros_like(count)
            scale = (context.abs() * weight).sum(-1, keepdim=True) / count
        else:
            loc = (context * weight).sum(-1, keepdim=True) / count
            scale = torch.sqrt((((context - loc) * weight) ** 2).sum(-1, keepdim=True) / count)
        scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))
        return loc, scale

    def encode(
        self, values: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        scaled = ((values - loc) / scale).clamp(-self.config.limit, self.config.limit)
        ids = torch.bucketize(scaled, self.edges[1:-1].to(values.device), right=False) + self.config.n_special
        if mask is not None:
            ids = torch.where(mask, ids, torch.full_like(ids, PAD_ID))
        return ids

    def decode(self, tokens: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        index = (tokens - self.config.n_special).clamp(0, self.config.n_bins - 1)
        return self.centers.to(scale.device)[index] * scale + loc
