"""Attention masks as functions of (query position, key position); True means "may attend".

Kinds: causal (key <= query), bidirectional (all), block-causal (a token sees its own block and every
earlier block: VAR's scales, frame-causal video), prefix (prefix-LM: the first `prefix_len` positions are
seen by everyone, the rest is causal). Masks are computed from position ids, so the same rule serves
teacher forcing, a cached chunk at explicit positions and FlexAttention (`flex_mask_mod`).

Random-order decoding (sigma-GPT / RAR style: tokens generated in a per-sequence permutation) uses
`order_mask` / `flex_order_mask_mod`: a token sees the tokens generated before it in its row's order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from genloom.core.errors import ConfigError

__all__ = [
    "causal_mask",
    "block_causal_mask",
    "prefix_mask",
    "block_ids_from_sizes",
    "structure_mask",
    "flex_mask_mod",
    "order_mask",
    "flex_order_mask_mod",
]


def block_ids_from_sizes(block_sizes: list[int], device: torch.device | str | None = None) -> Tensor:
    """Block index of every position: sizes [1, 4, 9] -> [0, 1, 1, 1, 1, 2, ... 2] (int64)."""
    if not block_sizes or min(block_sizes) < 1:
        raise ConfigError(f"block sizes must be positive ints, got {block_sizes}")
    sizes = torch.tensor(list(block_sizes), device=device)
    return torch.repeat_interleave(torch.arange(len(block_sizes), device=device), sizes)


def structure_mask(
    kind: str,
    query_pos: Tensor,
    key_pos: Tensor,
    *,
    block_ids: Tensor | None = None,
    prefix_len: int = 0,
) -> Tensor:
    """Bool mask [Lq, Lk] of rule `kind` for 1-D position ids of queries and keys."""
    q = query_pos[:, None]
    k = key_pos[None, :]
    if kind == "causal":
        return k <= q
    if kind == "bidirectional":
        return torch.ones(q.shape[0], k.shape[1], dtype=torch.bool, device=query_pos.device)
    if kind == "prefix":
        return (k <= q) | (k < prefix_len)
    if kind == "block_causal":
        if block_ids is None:
            raise ConfigError("a block-causal mask needs block_ids")
        return block_ids[key_pos][None, :] <= block_ids[query_pos][:, None]
    raise ConfigError(f"unknown mask kind {kind!r}; expected causal, bidirectional, block_causal or prefix")


def causal_mask(n: int, device: torch.device | str | None = None) -> Tensor:
    """[n, n] lower-triangular bool mask."""
    pos = torch.arange(n, device=device)
    return structure_mask("causal", pos, pos)


def block_causal_mask(block_sizes: list[int], device: torch.device | str | None = None) -> Tensor:
    """[L, L] bool mask, L = sum(block_sizes): a token sees exactly its own block and all earlier blocks."""
    ids = block_ids_from_sizes(block_sizes, device)
    pos = torch.arange(ids.numel(), device=device)
    return structure_mask("block_causal", pos, pos, block_ids=ids)


def prefix_mask(n: int, prefix_len: int, device: torch.device | str | None = None) -> Tensor:
    """[n, n] prefix-LM mask: bidirectional over the first `prefix_len` positions, causal after."""
    pos = torch.arange(n, device=device)
    return structure_mask("prefix", pos, pos, prefix_len=prefix_len)


def flex_mask_mod(
    kind: str,
    *,
    block_ids: Tensor | None = None,
    prefix_len: int = 0,
    key_padding: Tensor | None = None,
) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """A FlexAttention `mask_mod(b, h, q_idx, kv_idx)` for the same rules (positions = indices)."""

    if kind == "block_causal" and block_ids is None:
        raise ConfigError("a block-causal mask needs block_ids")
    if kind not in ("causal", "bidirectional", "prefix", "block_causal"):
        raise ConfigError(f"unknown mask kind {kind!r}")

    def mask_mod(b, h, q_idx, kv_idx):  # noqa: ANN001, ANN202 - FlexAttention signature
        if kind == "causal":
            allowed = kv_idx <= q_idx
        elif kind == "prefix":
            allowed = (kv_idx <= q_idx) | (kv_idx < prefix_len)
        elif kind == "block_causal":
            allowed = block_ids[kv_idx] <= block_ids[q_idx]
        else:
            allowed = kv_idx >= 0
        if key_padding is not None:
            allowed = allowed & key_padding[b, kv_idx]
        return allowed | (kv_idx == q_idx)  # a query always sees itself: no empty softmax rows

    return mask_mod


def _check_rank(rank: Tensor) -> None:
    if rank.dim() != 2 or rank.dtype not in (torch.int64, torch.int32):
        raise ConfigError(
            f"rank must be an integer tensor [B, L] (each position's step), got {rank.dtype} {tuple(rank.shape)}"
        )


def order_mask(rank: Tensor) -> Tensor:
    """Bool mask [B, 1, L, L] for random-order decoding: `rank[b, i]` is the step at which position i of
    row b is generated (a permutation of 0..L-1); position i sees position j iff rank[b, j] <= rank[b, i]."""
    _check_rank(rank)
    return (rank[:, None, :] <= rank[:, :, None])[:, None]


def flex_order_mask_mod(rank: Tensor) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """The FlexAttention `mask_mod` of `order_mask(rank)`; build its block mask with B = rank.shape[0]."""
    _check_rank(rank)

    def mask_mod(b, h, q_idx, kv_idx):  # noqa: ANN001, ANN202 - FlexAttention signature
        return rank[b, kv_idx] <= rank[b, q_idx]

    return mask_mod
