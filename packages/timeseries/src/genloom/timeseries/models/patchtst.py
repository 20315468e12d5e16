"""PatchTST (Nie et al., ICLR 2023) as the Time-Series-Library runs it: channel-independent patches of
each instance-normalised channel, a post-norm transformer encoder with a BatchNorm at the end, and a
flatten head from (d_model x patches) to the horizon."""

from __future__ import annotations

import torch
from torch import nn

from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.layers import (
    Encoder,
    InstanceNorm,
    PatchEmbedding,
    full_attention_encoder_layers,
)


class Transpose(nn.Module):
    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(*self.dims)


class FlattenHead(nn.Module):
    def __init__(self, n_features: int, target_window: int, head_dropout: float = 0.0):
        super().__init__()
        self.flatten = nn.Flatten(start_dim=-2)
        self.linear = nn.Linear(n_features, target_window)
        self.dropout = nn.Dropout(head_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(self.flatten(x)))


class PatchTST(nn.Module):
    def __init__(self, config: TSLibConfig):
        super().__init__()
        self.config = config
        c = config
        self.patch_embedding = PatchEmbedding(c.d_model, c.patch_len, c.stride, c.stride, c.dropout)
        layers = full_attention_encoder_layers(
            c.e_layers, c.d_model, c.n_heads, c.d_ff, dropout=c.dropout, activation=c.activation
        )
        norm = nn.Sequential(Transpose(1, 2), nn.BatchNorm1d(c.d_model), Transpose(1, 2))
        self.encoder = Encoder(layers, norm_layer=norm)
        self.patch_num = int((c.seq_len - c.patch_len) / c.stride + 2)
        self.head = FlattenHead(c.d_model * self.patch_num, c.pred_len, head_dropout=c.dropout)

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None) -> torch.Tensor:
        norm = InstanceNorm(x_enc)
        tokens, n_vars = self.patch_embedding(norm.normalize(x_enc).permute(0, 2, 1))
        hidden = self.encoder(tokens)
        hidden = hidden.reshape(-1, n_vars, hidden.shape[-2], hidden.shape[-1]).permute(0, 1, 3, 2)
        out = self.head(hidden).permute(0, 2, 1)
        return norm.denormalize(out)
