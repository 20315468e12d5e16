"""iTransformer (Liu et al., ICLR 2024): each variate's whole lookback is a token (plus one token per
calendar feature), a transformer encoder mixes variates, a Linear maps each token to the horizon."""

from __future__ import annotations

import torch
from torch import nn

from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.layers import (
    DataEmbeddingInverted,
    Encoder,
    InstanceNorm,
    full_attention_encoder_layers,
)


class ITransformer(nn.Module):
    def __init__(self, config: TSLibConfig):
        super().__init__()
        self.config = config
        c = config
        self.enc_embedding = DataEmbeddingInverted(c.seq_len, c.d_model, c.dropout)
        layers = full_attention_encoder_layers(
            c.e_layers, c.d_model, c.n_heads, c.d_ff, dropout=c.dropout, activation=c.activation
        )
        self.encoder = Encoder(layers, norm_layer=nn.LayerNorm(c.d_model))
        self.projection = nn.Linear(c.d_model, c.pred_len, bias=True)

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None) -> torch.Tensor:
        norm = InstanceNorm(x_enc)
        n_vars = x_enc.shape[-1]
        hidden = self.encoder(self.enc_embedding(norm.normalize(x_enc), x_mark_enc))
        out = self.projection(hidden).permute(0, 2, 1)[:, :, :n_vars]
        return norm.denormalize(out)
