"""Informer (Zhou et al., AAAI 2021) as the Time-Series-Library runs it: ProbSparse self-attention,
distilling conv layers between encoder layers, a decoder over label_len + pred_len steps.

ProbSparse draws random key indices (torch.randint on the global RNG) at every call, also in eval mode,
in the official order (encoder layers, then per decoder layer self- then cross-attention). The draw is
a replaceable `index_sampler` so a caller can inject stored indices; with a factor large enough that
every key and query is used, ProbSparse is exact softmax attention and the output is RNG-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.layers import (
    AttentionLayer,
    ConvLayer,
    DataEmbedding,
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
)

IndexSampler = Callable[[int, int, int], torch.Tensor]


def global_rng_sampler(length_k: int, length_q: int, sample_k: int) -> torch.Tensor:
    """The official draw: torch.randint(L_K, (L_Q, sample_k)) on the global CPU generator."""
    return torch.randint(length_k, (length_q, sample_k))


class ProbAttention(nn.Module):
    """ProbSparse attention: score u = factor*ceil(ln L_Q) "active" queries by a sampled max-minus-mean
    measure, attend them fully; the other queries get the mean of V (or the cumulative sum when causal).

    Returns [B, H, L_Q, D] (heads before positions), as the official module does."""

    def __init__(
        self,
        mask_flag: bool = True,
        factor: int = 5,
        scale: float | None = None,
        attention_dropout: float = 0.1,
    ):
        super().__init__()
        self.mask_flag, self.factor, self.scale = mask_flag, factor, scale
        self.dropout = nn.Dropout(attention_dropout)  # declared by the official module, never applied
        self.index_sampler: IndexSampler = global_rng_sampler

    def _sparse_scores(self, q, k, sample_k: int, n_top: int):
        B, H, L_K, _ = k.shape
        L_Q = q.shape[2]
        index_sample = self.index_sampler(L_K, L_Q, sample_k).to(q.device)
        k_sample = k[:, :, index_sample]  # [B, H, L_Q, sample_k, E]
        qk_sample = torch.matmul(q.unsqueeze(-2), k_sample.transpose(-2, -1)).squeeze(-2)
        measure = qk_sample.max(-1)[0] - qk_sample.sum(-1) / L_K
        top = measure.topk(n_top, sorted=False)[1]
        q_reduced = q[torch.arange(B)[:, None, None], torch.arange(H)[None, :, None], top]
        return torch.matmul(q_reduced, k.transpose(-2, -1)), top

    def forward(self, queries, keys, values, attn_mask=None):
        B, L_Q, H, D = queries.shape
        L_K = keys.shape[1]
        q, k, v = queries.transpose(2, 1), keys.transpose(2, 1), values.transpose(2, 1)
        sample_k = min(self.factor * int(np.ceil(np.log(L_K))), L_K)
        n_top = min(self.factor * int(np.ceil(np.log(L_Q))), L_Q)
        scores, top = self._sparse_scores(q, k, sample_k, n_top)
        scores = scores * (self.scale or 1.0 / math.sqrt(D))
        if self.mask_flag:
            if L_Q != v.shape[2]:
                raise ValueError("causal ProbAttention needs as many queries as values")
            context = v.cumsum(dim=-2)
            causal = torch.ones(L_Q, scores.shape[-1], dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(causal[top], -np.inf)
        else:
            context = v.mean(dim=-2, keepdim=True).expand(B, H, L_Q, v.shape[-1]).clone()
        attn = torch.softmax(scores, dim=-1)
        context[torch.arange(B)[:, None, None], torch.arange(H)[None, :, None], top] = torch.matmul(
            attn, v
        ).type_as(context)
        return context.contiguous()


class Informer(nn.Module):
    def __init__(self, config: TSLibConfig):
        super().__init__()
        self.config = config
        c = config
        self.enc_embedding = DataEmbedding(c.enc_in, c.d_model, c.embed, c.freq, c.dropout)
        self.dec_embedding = DataEmbedding(c.dec_in, c.d_model, c.embed, c.freq, c.dropout)

        def prob(mask: bool) -> ProbAttention:
            return ProbAttention(mask, c.factor, attention_dropout=c.dropout)

        self.encoder = Encoder(
            [
                EncoderLayer(
                    AttentionLayer(prob(False), c.d_model, c.n_heads),
                    c.d_model,
                    c.d_ff,
                    c.dropout,
                    c.activation,
                )
                for _ in range(c.e_layers)
            ],
            [ConvLayer(c.d_model) for _ in range(c.e_layers - 1)]
            if c.distil and "forecast" in c.task_name
            else None,
            norm_layer=nn.LayerNorm(c.d_model),
        )
        self.decoder = Decoder(
            [
                DecoderLayer(
                    AttentionLayer(prob(True), c.d_model, c.n_heads),
                    AttentionLayer(prob(False), c.d_model, c.n_heads),
                    c.d_model,
                    c.d_ff,
                    c.dropout,
                    c.activation,
                )
                for _ in range(c.d_layers)
            ],
            norm_layer=nn.LayerNorm(c.d_model),
            projection=nn.Linear(c.d_model, c.c_out, bias=True),
        )

    def prob_attentions(self) -> list[ProbAttention]:
        """The ProbSparse modules in the official draw order (encoder, then decoder self/cross per layer)."""
        return [m for m in self.modules() if isinstance(m, ProbAttention)]

    def set_index_sampler(self, sampler: IndexSampler) -> None:
        for module in self.prob_attentions():
            module.index_sampler = sampler

    def forward(self, x_enc: torch.Tensor, x_mark_enc, x_dec: torch.Tensor, x_mark_dec) -> torch.Tensor:
        enc_out = self.encoder(self.enc_embedding(x_enc, x_mark_enc))
        dec_out = self.decoder(self.dec_embedding(x_dec, x_mark_dec), enc_out)
        return dec_out[:, -self.config.pred_len :]


def replay_sampler(indices: list[torch.Tensor]) -> IndexSampler:
    """A sampler that returns stored index tensors in order (to replay another run's draws)."""
    queue = list(indices)

    def sample(length_k: int, length_q: int, sample_k: int) -> torch.Tensor:
        if not queue:
            raise RuntimeError("replay_sampler ran out of stored indices")
        index = queue.pop(0)
        if tuple(index.shape) != (length_q, sample_k) or int(index.max()) >= length_k:
            raise ValueError(
                f"stored indices of shape {tuple(index.shape)} do not fit a ({length_q}, {sample_k}) draw"
            )
        return index

    return sample
