"""Building blocks of the Time-Series-Library baselines, with the official module names so that
official state_dicts load with strict key matching (embeddings, attention layer, encoder/decoder,
distilling conv layer, moving-average series decomposition)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genloom.timeseries.data.timefeatures import TIME_FEATURE_DIMS


def activation_fn(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.GELU()


def sinusoid_table(length: int, d_model: int) -> torch.Tensor:
    """The transformer sinusoid table [length, d_model] (sin on even, cos on odd channels)."""
    position = torch.arange(0, length, dtype=torch.float32).unsqueeze(1)
    div_term = (torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model)).exp()
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)[:, : d_model // 2]
    return table


class PositionalEmbedding(nn.Module):
    """Fixed sinusoid positions; the table is a persistent buffer `pe` [1, max_len, d_model]."""

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, d_model).unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pe[:, : x.size(1)]


class TokenEmbedding(nn.Module):
    """Values -> d_model by a circular Conv1d of kernel 3 over time (no bias)."""

    def __init__(self, c_in: int, d_model: int):
        super().__init__()
        self.tokenConv = nn.Conv1d(c_in, d_model, 3, padding=1, padding_mode="circular", bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokenConv(x.permute(0, 2, 1)).transpose(1, 2)


class FixedEmbedding(nn.Module):
    """A frozen sinusoid lookup table (key `emb.weight`), for integer calendar fields."""

    def __init__(self, c_in: int, d_model: int):
        super().__init__()
        self.emb = nn.Embedding(c_in, d_model)
        self.emb.weight = nn.Parameter(sinusoid_table(c_in, d_model), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb(x).detach()


class TemporalEmbedding(nn.Module):
    """Sum of per-field embeddings of raw calendar marks (month, day, weekday, hour[, minute])."""

    def __init__(self, d_model: int, embed_type: str = "fixed", freq: str = "h"):
        super().__init__()
        embed = FixedEmbedding if embed_type == "fixed" else nn.Embedding
        if freq == "t":
            self.minute_embed = embed(4, d_model)
        self.hour_embed = embed(24, d_model)
        self.weekday_embed = embed(7, d_model)
        self.day_embed = embed(32, d_model)
        self.month_embed = embed(13, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()
        minute = self.minute_embed(x[:, :, 4]) if hasattr(self, "minute_embed") else 0.0
        return (
            self.hour_embed(x[:, :, 3])
            + self.weekday_embed(x[:, :, 2])
            + self.day_embed(x[:, :, 1])
            + self.month_embed(x[:, :, 0])
            + minute
        )


class TimeFeatureEmbedding(nn.Module):
    """Scaled calendar features (timeF) -> d_model by a Linear without bias."""

    def __init__(self, d_model: int, freq: str = "h"):
        super().__init__()
        self.embed = nn.Linear(TIME_FEATURE_DIMS[freq], d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


def temporal_embedding(d_model: int, embed: str, freq: str) -> nn.Module:
    return (
        TimeFeatureEmbedding(d_model, freq) if embed == "timeF" else TemporalEmbedding(d_model, embed, freq)
    )


class DataEmbedding(nn.Module):
    """Value conv + calendar embedding + sinusoid positions (Informer, Transformer)."""

    def __init__(self, c_in: int, d_model: int, embed: str = "timeF", freq: str = "h", dropout: float = 0.1):
        super().__init__()
        self.value_embedding = TokenEmbedding(c_in, d_model)
        self.position_embedding = PositionalEmbedding(d_model)
        self.temporal_embedding = temporal_embedding(d_model, embed, freq)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        out = self.value_embedding(x) + self.position_embedding(x)
        if x_mark is not None:
            out = out + self.temporal_embedding(x_mark)
        return self.dropout(out)


class DataEmbeddingWithoutPosition(DataEmbedding):
    """As DataEmbedding but the positions are left out of the sum (Autoformer); `pe` still exists."""

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        out = self.value_embedding(x)
        if x_mark is not None:
            out = out + self.temporal_embedding(x_mark)
        return self.dropout(out)


class DataEmbeddingInverted(nn.Module):
    """iTransformer: each variate's whole lookback (and each calendar feature series) is one token."""

    def __init__(self, seq_len: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        self.value_embedding = nn.Linear(seq_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        x = x.permute(0, 2, 1)
        if x_mark is not None:
            x = torch.cat([x, x_mark.permute(0, 2, 1)], dim=1)
        return self.dropout(self.value_embedding(x))


class PatchEmbedding(nn.Module):
    """PatchTST: replicate-pad the end by `padding`, cut patches (length patch_len, step stride), embed
    each by a Linear without bias, add sinusoid positions. Input [B, C, L] -> [B*C, patches, d_model]."""

    def __init__(self, d_model: int, patch_len: int, stride: int, padding: int, dropout: float):
        super().__init__()
        self.patch_len, self.stride = patch_len, stride
        self.padding_patch_layer = nn.ReplicationPad1d((0, padding))
        self.value_embedding = nn.Linear(patch_len, d_model, bias=False)
        self.position_embedding = PositionalEmbedding(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        n_vars = x.shape[1]
        x = self.padding_patch_layer(x).unfold(-1, self.patch_len, self.stride)
        x = x.reshape(x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
        return self.dropout(self.value_embedding(x) + self.position_embedding(x)), n_vars


class FullAttention(nn.Module):
    """Softmax attention over [B, L, H, E] inputs through scaled_dot_product_attention (causal on demand)."""

    def __init__(self, mask_flag: bool = True, scale: float | None = None, attention_dropout: float = 0.1):
        super().__init__()
        self.mask_flag, self.scale, self.dropout = mask_flag, scale, attention_dropout

    def forward(self, queries, keys, values, attn_mask=None):
        scale = self.scale or 1.0 / math.sqrt(queries.shape[-1])
        q, k, v = (t.transpose(1, 2) for t in (queries, keys, values))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.mask_flag and attn_mask is None,
            scale=scale,
        )
        return out.transpose(1, 2).contiguous()


class AttentionLayer(nn.Module):
    """Project to heads, run the inner attention, merge heads with `out.view(B, L, -1)`, project out.

    The merge is a plain view of whatever the inner attention returns, as in the official code (for
    ProbAttention, which returns [B, H, L, D], this interleaves heads and positions; kept for parity)."""

    def __init__(
        self,
        attention: nn.Module,
        d_model: int,
        n_heads: int,
        d_keys: int | None = None,
        d_values: int | None = None,
    ):
        super().__init__()
        d_keys = d_keys or d_model // n_heads
        d_values = d_values or d_model // n_heads
        self.inner_attention = attention
        self.query_projection = nn.Linear(d_model, d_keys * n_heads)
        self.key_projection = nn.Linear(d_model, d_keys * n_heads)
        self.value_projection = nn.Linear(d_model, d_values * n_heads)
        self.out_projection = nn.Linear(d_values * n_heads, d_model)
        self.n_heads = n_heads

    def forward(self, queries, keys, values, attn_mask=None):
        B, L, _ = queries.shape
        S, H = keys.shape[1], self.n_heads
        q = self.query_projection(queries).view(B, L, H, -1)
        k = self.key_projection(keys).view(B, S, H, -1)
        v = self.value_projection(values).view(B, S, H, -1)
        out = self.inner_attention(q, k, v, attn_mask)
        return self.out_projection(out.reshape(B, L, -1))


class EncoderLayer(nn.Module):
    """Post-norm layer: attention + residual + LayerNorm, 1x1-conv feed-forward + residual + LayerNorm."""

    def __init__(
        self,
        attention: nn.Module,
        d_model: int,
        d_ff: int | None = None,
        dropout: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        d_ff = d_ff or 4 * d_model
        self.attention = attention
        self.conv1 = nn.Conv1d(d_model, d_ff, kernel_size=1)
        self.conv2 = nn.Conv1d(d_ff, d_model, kernel_size=1)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation_fn(activation)

    def forward(self, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x, x, x, attn_mask)))
        y = self.dropout(self.activation(self.conv1(x.transpose(-1, 1))))
        y = self.dropout(self.conv2(y).transpose(-1, 1))
        return self.norm2(x + y)


class ConvLayer(nn.Module):
    """Informer's distilling step: circular conv, BatchNorm, ELU, max-pool halving the length."""

    def __init__(self, c_in: int):
        super().__init__()
        self.downConv = nn.Conv1d(c_in, c_in, kernel_size=3, padding=2, padding_mode="circular")
        self.norm = nn.BatchNorm1d(c_in)
        self.activation = nn.ELU()
        self.maxPool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm(self.downConv(x.permute(0, 2, 1))))
        return self.maxPool(x).transpose(1, 2)


class Encoder(nn.Module):
    """A stack of encoder layers, optionally interleaved with distilling conv layers, then a norm."""

    def __init__(
        self,
        attn_layers: list[nn.Module],
        conv_layers: list[nn.Module] | None = None,
        norm_layer: nn.Module | None = None,
    ):
        super().__init__()
        self.attn_layers = nn.ModuleList(attn_layers)
        self.conv_layers = nn.ModuleList(conv_layers) if conv_layers is not None else None
        self.norm = norm_layer

    def forward(self, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
        if self.conv_layers is not None:
            for attn_layer, conv_layer in zip(self.attn_layers, self.conv_layers):
                x = conv_layer(attn_layer(x, attn_mask))
            x = self.attn_layers[-1](x)
        else:
            for attn_layer in self.attn_layers:
                x = attn_layer(x, attn_mask)
        return self.norm(x) if self.norm is not None else x


def full_attention_encoder_layers(
    n_layers: int,
    d_model: int,
    n_heads: int,
    d_ff: int,
    *,
    dropout: float,
    activation: str,
    causal: bool = False,
) -> list[EncoderLayer]:
    """`n_layers` vanilla encoder layers over full attention (causal for GPHT, bidirectional for
    iTransformer and PatchTST), with the official key names; each model adds its own embedding and norm."""
    return [
        EncoderLayer(
            AttentionLayer(FullAttention(causal, attention_dropout=dropout), d_model, n_heads),
            d_model,
            d_ff,
            dropout=dropout,
            activation=activation,
        )
        for _ in range(n_layers)
    ]


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: causal self-attention, cross-attention, 1x1-conv feed-forward."""

    def __init__(
        self,
        self_attention: nn.Module,
        cross_attention: nn.Module,
        d_model: int,
        d_ff: int | None = None,
        dropout: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        d_ff = d_ff or 4 * d_model
        self.self_attention, self.cross_attention = self_attention, cross_attention
        self.conv1 = nn.Conv1d(d_model, d_ff, kernel_size=1)
        self.conv2 = nn.Conv1d(d_ff, d_model, kernel_size=1)
        self.norm1, self.norm2, self.norm3 = (
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
        )
        self.dropout = nn.Dropout(dropout)
        self.activation = activation_fn(activation)

    def forward(self, x, cross, x_mask=None, cross_mask=None):
        x = self.norm1(x + self.dropout(self.self_attention(x, x, x, x_mask)))
        x = self.norm2(x + self.dropout(self.cross_attention(x, cross, cross, cross_mask)))
        y = self.dropout(self.activation(self.conv1(x.transpose(-1, 1))))
        y = self.dropout(self.conv2(y).transpose(-1, 1))
        return self.norm3(x + y)


class Decoder(nn.Module):
    """A stack of decoder layers, a norm and an output projection."""

    def __init__(
        self,
        layers: list[nn.Module],
        norm_layer: nn.Module | None = None,
        projection: nn.Module | None = None,
    ):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm, self.projection = norm_layer, projection

    def forward(self, x, cross, x_mask=None, cross_mask=None):
        for layer in self.layers:
            x = layer(x, cross, x_mask, cross_mask)
        if self.norm is not None:
            x = self.norm(x)
        return self.projection(x) if self.projection is not None else x


class MovingAverage(nn.Module):
    """Moving average over time; both ends padded by replicating the first/last value (k-1)//2 times."""

    def __init__(self, kernel_size: int, stride: int = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.avg = nn.AvgPool1d(kernel_size=kernel_size, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.kernel_size - 1) // 2
        x = torch.cat([x[:, :1].expand(-1, pad, -1), x, x[:, -1:].expand(-1, pad, -1)], dim=1)
        return self.avg(x.permute(0, 2, 1)).permute(0, 2, 1)


class SeriesDecomposition(nn.Module):
    """x -> (seasonal = x - trend, trend = moving average of x)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.moving_avg = MovingAverage(kernel_size, stride=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = self.moving_avg(x)
        return x - trend, trend


class InstanceNorm:
    """Per-series standardisation over time (RevIN without affine), undone on the forecast."""

    def __init__(self, x: torch.Tensor, eps: float = 1e-5):
        self.mean = x.mean(1, keepdim=True).detach()
        self.std = torch.sqrt(torch.var(x - self.mean, dim=1, keepdim=True, unbiased=False) + eps)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean
