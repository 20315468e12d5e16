"""A small pre-norm causal transformer over token ids (for the tokenised AR forecaster).

Written here because `genloom.core.nn` is not in the tree yet; it uses the same pieces the core stack
will (pre-norm, SDPA attention, GELU MLP, learned positions) so it can switch over by swapping this file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DecoderConfig:
    vocab_size: int = 1025
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 512
    max_len: int = 256
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.n_heads, self.dropout = c.n_heads, c.dropout
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.out = nn.Linear(c.d_model, c.d_model)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, cache: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """With `cache` (a [k, v] list, empty at prefill) keys/values are appended and reused."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        is_causal = attn_mask is None
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
                is_causal = False  # one new query attends to every cached key
            cache[:] = [k, v]
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            is_causal=is_causal and T > 1,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class DecoderBlock(nn.Module):
    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.attn = CausalSelfAttention(c)
        self.mlp = nn.Sequential(nn.Linear(c.d_model, c.d_ff), nn.GELU(), nn.Linear(c.d_ff, c.d_model))
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, cache=None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), attn_mask, cache))
        return x + self.drop(self.mlp(self.norm2(x)))


class TokenDecoder(nn.Module):
    """ids [B, T] (+ key mask [B, T], True = real token) -> logits [B, T, vocab]."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.max_len, config.d_model)
        self.blocks = nn.ModuleList([DecoderBlock(config) for _ in range(config.n_layers)])
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T = ids.shape
        if T > self.config.max_len:
            raise ValueError(f"sequence of {T} tokens exceeds max_len {self.config.max_len}")
        x = self.embed(ids) + self.pos(torch.arange(T, device=ids.device))
        attn_mask = None
        if key_mask is not None and not bool(key_mask.all()):
            causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
            eye = torch.eye(T, dtype=torch.bool, device=ids.device)
            attn_mask = ((causal & key_mask[:, None, :]) | eye)[:, None]  # pads still see themselves
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.head(self.norm(x))

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """Run a prompt [B, T] and return the last logits [B, vocab] and a fresh KV cache."""
        cache: list[list[torch.Tensor]] = [[] for _ in self.blocks]
        x = self.embed(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block, layer_cache in zip(self.blocks, cache):
            x = block(x, None, layer_cache)
        return self.head(self.norm(x[:, -1])), cache

    def step(self, ids: torch.Tensor, position: int, cache: list[list[torch.Tensor]]) -> torch.Tensor:
        """Decode one token per row [B, 1] at `position` with the cache; returns logits [B, vocab]."""
        if position >= self.config.max_len:
            raise ValueError(
                f"position {position} exceeds max_len {self.config.max_len}; re-prefill a shorter window"
            )
        x = self.embed(ids) + self.pos.weight[position]
        for block, layer_cache in zip(self.blocks, cache):
            x = block(x, None, layer_cache)
        return self.head(self.norm(x[:, -1]))
