"""Autoformer (Wu et al., NeurIPS 2021) as the Time-Series-Library runs it: auto-correlation in place of
attention (FFT correlation, aggregation of the values rolled by the top-k delays), series decomposition
inside every layer, a trend path accumulated through the decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.layers import (
    DataEmbeddingWithoutPosition,
    SeriesDecomposition,
    activation_fn,
)


class AutoCorrelation(nn.Module):
    """Period-based dependencies: correlation of queries and keys by FFT, top_k = int(factor * ln L) delays;
    training aggregates with delays shared over the batch, inference with per-sample delays."""

    def __init__(
        self,
        mask_flag: bool = True,
        factor: int = 1,
        scale: float | None = None,
        attention_dropout: float = 0.1,
    ):
        super().__init__()
        self.factor = factor
        self.dropout = nn.Dropout(attention_dropout)  # declared by the official module, never applied

    def _aggregate_training(self, values: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        length = values.shape[3]
        top_k = int(self.factor * math.log(length))
        mean_value = corr.mean(dim=1).mean(dim=1)
        index = torch.topk(mean_value.mean(dim=0), top_k, dim=-1)[1]
        weights = torch.stack([mean_value[:, index[i]] for i in range(top_k)], dim=-1)
        tmp_corr = torch.softmax(weights, dim=-1)
        out = torch.zeros_like(values).float()
        for i in range(top_k):
            pattern = torch.roll(values, -int(index[i]), -1)
            out = out + pattern * tmp_corr[:, i, None, None, None]
        return out

    def _aggregate_inference(self, values: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        batch, head, channel, length = values.shape
        init_index = (
            torch.arange(length, device=values.device)
            .view(1, 1, 1, length)
            .expand(batch, head, channel, length)
        )
        top_k = int(self.factor * math.log(length))
        mean_value = corr.mean(dim=1).mean(dim=1)
        weights, delay = torch.topk(mean_value, top_k, dim=-1)
        tmp_corr = torch.softmax(weights, dim=-1)
        doubled = values.repeat(1, 1, 1, 2)
        out = torch.zeros_like(values).float()
        for i in range(top_k):
            pattern = torch.gather(doubled, dim=-1, index=init_index + delay[:, i].view(batch, 1, 1, 1))
            out = out + pattern * tmp_corr[:, i].view(batch, 1, 1, 1)
        return out

    def forward(self, queries, keys, values, attn_mask=None):
        B, L, H, E = queries.shape
        S = values.shape[1]
        if L > S:
            zeros = torch.zeros_like(queries[:, : (L - S)]).float()
            values, keys = torch.cat([values, zeros], dim=1), torch.cat([keys, zeros], dim=1)
        else:
            values, keys = values[:, :L], keys[:, :L]
        q_fft = torch.fft.rfft(queries.permute(0, 2, 3, 1).contiguous(), dim=-1)
        k_fft = torch.fft.rfft(keys.permute(0, 2, 3, 1).contiguous(), dim=-1)
        corr = torch.fft.irfft(q_fft * torch.conj(k_fft), dim=-1)
        aggregate = self._aggregate_training if self.training else self._aggregate_inference
        return aggregate(values.permute(0, 2, 3, 1).contiguous(), corr).permute(0, 3, 1, 2).contiguous()


class AutoCorrelationLayer(nn.Module):
    def __init__(self, correlation: nn.Module, d_model: int, n_heads: int):
        super().__init__()
        d_keys = d_model // n_heads
        self.inner_correlation = correlation
        self.query_projection = nn.Linear(d_model, d_keys * n_heads)
        self.key_projection = nn.Linear(d_model, d_keys * n_heads)
        self.value_projection = nn.Linear(d_model, d_keys * n_heads)
        self.out_projection = nn.Linear(d_keys * n_heads, d_model)
        self.n_heads = n_heads

    def forward(self, queries, keys, values, attn_mask=None):
        B, L, _ = queries.shape
        S, H = keys.shape[1], self.n_heads
        out = self.inner_correlation(
            self.query_projection(queries).view(B, L, H, -1),
            self.key_projection(keys).view(B, S, H, -1),
            self.value_projection(values).view(B, S, H, -1),
            attn_mask,
        )
        return self.out_projection(out.reshape(B, L, -1))


class SeasonalLayerNorm(nn.Module):
    """LayerNorm, then subtract its mean over time (the official `my_Layernorm`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.layernorm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = self.layernorm(x)
        return x_hat - x_hat.mean(dim=1, keepdim=True)


class AutoformerEncoderLayer(nn.Module):
    def __init__(
        self, attention: nn.Module, d_model: int, d_ff: int, moving_avg: int, dropout: float, activation: str
    ):
        super().__init__()
        self.attention = attention
        self.conv1 = nn.Conv1d(d_model, d_ff, kernel_size=1, bias=False)
        self.conv2 = nn.Conv1d(d_ff, d_model, kernel_size=1, bias=False)
        self.decomp1, self.decomp2 = SeriesDecomposition(moving_avg), SeriesDecomposition(moving_avg)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation_fn(activation)

    def forward(self, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
        x, _ = self.decomp1(x + self.dropout(self.attention(x, x, x, attn_mask)))
        y = self.dropout(self.activation(self.conv1(x.transpose(-1, 1))))
        y = self.dropout(self.conv2(y).transpose(-1, 1))
        return self.decomp2(x + y)[0]


class AutoformerEncoder(nn.Module):
    def __init__(self, attn_layers: list[nn.Module], norm_layer: nn.Module | None = None):
        super().__init__()
        self.attn_layers = nn.ModuleList(attn_layers)
        self.norm = norm_layer

    def forward(self, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
        for layer in self.attn_layers:
            x = layer(x, attn_mask)
        return self.norm(x) if self.norm is not None else x


class AutoformerDecoderLayer(nn.Module):
    def __init__(
        self,
        self_attention: nn.Module,
        cross_attention: nn.Module,
        d_model: int,
        c_out: int,
        d_ff: int,
        moving_avg: int,
        dropout: float,
        activation: str,
    ):
        super().__init__()
        self.self_attention, self.cross_attention = self_attention, cross_attention
        self.conv1 = nn.Conv1d(d_model, d_ff, kernel_size=1, bias=False)
        self.conv2 = nn.Conv1d(d_ff, d_model, kernel_size=1, bias=False)
        self.decomp1 = SeriesDecomposition(moving_avg)
        self.decomp2 = SeriesDecomposition(moving_avg)
        self.decomp3 = SeriesDecomposition(moving_avg)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Conv1d(
            d_model, c_out, kernel_size=3, stride=1, padding=1, padding_mode="circular", bias=False
        )
        self.activation = activation_fn(activation)

    def forward(self, x, cross, x_mask=None, cross_mask=None):
        x, trend1 = self.decomp1(x + self.dropout(self.self_attention(x, x, x, x_mask)))
        x, trend2 = self.decomp2(x + self.dropout(self.cross_attention(x, cross, cross, cross_mask)))
        y = self.dropout(self.activation(self.conv1(x.transpose(-1, 1))))
        y = self.dropout(self.conv2(y).transpose(-1, 1))
        x, trend3 = self.decomp3(x + y)
        residual_trend = self.projection((trend1 + trend2 + trend3).permute(0, 2, 1)).transpose(1, 2)
        return x, residual_trend


class AutoformerDecoder(nn.Module):
    def __init__(
        self,
        layers: list[nn.Module],
        norm_layer: nn.Module | None = None,
        projection: nn.Module | None = None,
    ):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm, self.projection = norm_layer, projection

    def forward(self, x, cross, x_mask=None, cross_mask=None, trend=None):
        for layer in self.layers:
            x, residual_trend = layer(x, cross, x_mask, cross_mask)
            trend = trend + residual_trend
        if self.norm is not None:
            x = self.norm(x)
        if self.projection is not None:
            x = self.projection(x)
        return x, trend


class Autoformer(nn.Module):
    def __init__(self, config: TSLibConfig):
        super().__init__()
        self.config = config
        c = config
        self.decomp = SeriesDecomposition(c.moving_avg)
        self.enc_embedding = DataEmbeddingWithoutPosition(c.enc_in, c.d_model, c.embed, c.freq, c.dropout)
        self.dec_embedding = DataEmbeddingWithoutPosition(c.dec_in, c.d_model, c.embed, c.freq, c.dropout)

        def corr(mask: bool) -> AutoCorrelationLayer:
            return AutoCorrelationLayer(
                AutoCorrelation(mask, c.factor, attention_dropout=c.dropout), c.d_model, c.n_heads
            )

        self.encoder = AutoformerEncoder(
            [
                AutoformerEncoderLayer(corr(False), c.d_model, c.d_ff, c.moving_avg, c.dropout, c.activation)
                for _ in range(c.e_layers)
            ],
            norm_layer=SeasonalLayerNorm(c.d_model),
        )
        self.decoder = AutoformerDecoder(
            [
                AutoformerDecoderLayer(
                    corr(True), corr(False), c.d_model, c.c_out, c.d_ff, c.moving_avg, c.dropout, c.activation
                )
                for _ in range(c.d_layers)
            ],
            norm_layer=SeasonalLayerNorm(c.d_model),
            projection=nn.Linear(c.d_model, c.c_out, bias=True),
        )

    def forward(self, x_enc: torch.Tensor, x_mark_enc, x_dec: torch.Tensor, x_mark_dec) -> torch.Tensor:
        c = self.config
        mean = x_enc.mean(dim=1, keepdim=True).expand(-1, c.pred_len, -1)
        seasonal_init, trend_init = self.decomp(x_enc)
        trend_init = torch.cat([trend_init[:, -c.label_len :], mean], dim=1)
        seasonal_init = F.pad(seasonal_init[:, -c.label_len :], (0, 0, 0, c.pred_len))
        enc_out = self.encoder(self.enc_embedding(x_enc, x_mark_enc))
        seasonal, trend = self.decoder(
            self.dec_embedding(seasonal_init, x_mark_dec), enc_out, trend=trend_init
        )
        return (trend + seasonal)[:, -c.pred_len :]
