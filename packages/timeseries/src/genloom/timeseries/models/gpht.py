"""GPHT (Liu et al., "Generative Pretrained Hierarchical Transformer for Time Series Forecasting", KDD 2024).

Channel-independent and autoregressive: the (instance-normalised) series is cut into tokens of
`token_len` steps; each hierarchy level max-pools the series by its rate, embeds patches of
token_len // rate pooled steps, runs a causal transformer and predicts, for every token, the next
token's `token_len` values. Levels are stacked as an iterative residual: the next level sees what the
previous ones did not explain. One model forecasts any horizon by feeding its forecasts back.
Keys follow the official `models/GPHT.py` (`encoders.<level>.{patch_embedding,encoder,forecast_head}`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genloom.core.errors import check_field_names
from genloom.timeseries.errors import CheckpointError, SeriesInputError
from genloom.timeseries.models.layers import (
    Encoder,
    InstanceNorm,
    PositionalEmbedding,
    full_attention_encoder_layers,
)


@dataclass
class GPHTConfig:
    """Official field names (`GT_*` are the hierarchical transformer's sizes)."""

    seq_len: int = 336
    token_len: int = 48
    GT_pooling_rate: list[int] = field(default_factory=lambda: [8, 4, 2, 1])
    depth: int = 4
    GT_d_model: int = 512
    GT_d_ff: int = 2048
    GT_e_layers: int = 4
    n_heads: int = 8
    activation: str = "gelu"
    dropout: float = 0.1

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> GPHTConfig:
        known = check_field_names(cls, overrides, error=CheckpointError, what="GPHT config")
        kwargs = {k: v for k, v in values.items() if k in known}
        kwargs.update(overrides)
        config = cls(**kwargs)
        if len(config.GT_pooling_rate) < config.depth:
            raise CheckpointError(
                f"GT_pooling_rate {config.GT_pooling_rate} has fewer entries than depth {config.depth}"
            )
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class PooledPatchEmbedding(nn.Module):
    """Max-pool by `rate`, cut non-overlapping patches of token_len // rate, Linear (no bias) + positions."""

    def __init__(self, d_model: int, token_len: int, rate: int):
        super().__init__()
        if token_len % rate:
            raise CheckpointError(f"token_len {token_len} is not divisible by the pooling rate {rate}")
        self.rate, self.patch_size = rate, token_len // rate
        self.value_embedding = nn.Linear(self.patch_size, d_model, bias=False)
        self.position_embedding = PositionalEmbedding(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B*C, L] -> [B*C, L / token_len, d_model]
        pooled = F.max_pool1d(x.unsqueeze(1), kernel_size=self.rate, stride=self.rate).squeeze(1)
        patches = pooled.unfold(-1, self.patch_size, self.patch_size)
        return self.value_embedding(patches) + self.position_embedding(patches)


class GPHTLevel(nn.Module):
    """One hierarchy level: pooled patch tokens -> causal transformer -> next-token forecast per token."""

    def __init__(self, config: GPHTConfig, rate: int):
        super().__init__()
        c = config
        self.patch_embedding = PooledPatchEmbedding(c.GT_d_model, c.token_len, rate)
        self.encoder = Encoder(
            full_attention_encoder_layers(
                c.GT_e_layers,
                c.GT_d_model,
                c.n_heads,
                c.GT_d_ff,
                dropout=c.dropout,
                activation=c.activation,
                causal=True,
            ),
            norm_layer=nn.LayerNorm(c.GT_d_model),
        )
        self.forecast_head = nn.Linear(c.GT_d_model, c.token_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B*C, L] -> [B*C, L]
        hidden = self.encoder(self.patch_embedding(x))
        return self.forecast_head(hidden).flatten(1)


class GPHT(nn.Module):
    def __init__(self, config: GPHTConfig):
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleList(
            [GPHTLevel(config, config.GT_pooling_rate[i]) for i in range(config.depth)]
        )

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None) -> torch.Tensor:
        """[B, L, C] -> [B, L, C]: at each token position, the forecast of the following token."""
        B, L, C = x_enc.shape
        token_len = self.config.token_len
        if L % token_len:
            raise SeriesInputError(f"GPHT needs an input length divisible by token_len {token_len}, got {L}")
        norm = InstanceNorm(x_enc)
        residual = norm.normalize(x_enc).permute(0, 2, 1).reshape(B * C, L)
        total = torch.zeros_like(residual)
        for level in self.encoders:
            out = level(residual)
            total = total + out
            residual = residual - F.pad(out[:, :-token_len], (token_len, 0))
        return norm.denormalize(total.reshape(B, C, L).permute(0, 2, 1))

    @torch.no_grad()
    def forecast(self, x_enc: torch.Tensor, horizon: int) -> torch.Tensor:
        """Autoregressive forecast of any horizon: [B, L, C] -> [B, horizon, C] (the official test loop)."""
        if horizon <= 0:
            raise SeriesInputError(f"horizon must be positive, got {horizon}")
        token_len = self.config.token_len
        window, seq_len = x_enc, x_enc.shape[1]
        outputs = []
        for _ in range(math.ceil(horizon / token_len)):
            step = self(window)[:, -token_len:]
            outputs.append(step)
            window = torch.cat([window, step], dim=1)[:, -seq_len:]
        return torch.cat(outputs, dim=1)[:, :horizon]
