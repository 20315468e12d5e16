"""`KVCache`: a static, pre-allocated key/value buffer written at explicit positions (gpt-fast style).

Shapes are fixed at construction ([B, n_kv_heads, max_seq_len, head_dim]), so the step path has no
data-dependent Python branching and works under torch.compile / CUDA graphs. Speculative and Jacobi
decoding roll back rejected drafts with `truncate(length)`, which zeroes every slot at or after `length`
so the cache is exactly what it would be had those tokens never been written. Beam search re-orders rows
with `reorder(indices)` (a gather along the batch that may also grow it, e.g. prompt rows to beams).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genloom.core.errors import InputError

__all__ = ["KVCache"]

SYNC_SLOTS = 1024  # counters a launch may use: split-K's one per block of 8 outputs (8,192 outputs)


class KVCache(nn.Module):
    """Per-layer key/value cache; buffers are non-persistent (never part of a checkpoint)."""

    def __init__(
        self,
        *,
        batch_size: int,
        n_kv_heads: int,
        max_seq_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        shape = (batch_size, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        # arrival counters of this layer's decode kernels (split-K products, `decode_layer`'s grid barriers),
        # zero between launches
        self.register_buffer(
            "sync", torch.zeros(SYNC_SLOTS, dtype=torch.int32, device=device), persistent=False
        )

    @property
    def batch_size(self) -> int:
        return self.k_cache.shape[0]

    @property
    def max_seq_len(self) -> int:
        return self.k_cache.shape[2]

    def update(self, input_pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, H_kv, L, D] at the L positions `input_pos` [L]; return the full caches."""
        if (
            k.shape[0] != self.batch_size
            or k.shape[1] != self.k_cache.shape[1]
            or k.shape[3] != self.k_cache.shape[3]
        ):
            raise InputError(
                f"KVCache holds [B={self.batch_size}, H_kv={self.k_cache.shape[1]}, *, D={self.k_cache.shape[3]}] "
                f"but got keys of shape {tuple(k.shape)} (was setup_cache called with this batch size?)"
            )
        self.k_cache.index_copy_(2, input_pos, k.to(self.k_cache.dtype))
        self.v_cache.index_copy_(2, input_pos, v.to(self.v_cache.dtype))
        return self.k_cache, self.v_cache

    def reorder(self, indices: Tensor) -> None:
        """Row i of the cache becomes old row `indices[i]` (gather along the batch; beam search).

        With as many indices as rows the buffers are overwritten in place (their storage stays, so
        compiled / CUDA-graph steps stay valid); with a different count they are re-allocated at the new
        batch size (e.g. `arange(B).repeat_interleave(K)` expands B prompts into B*K beams)."""
        if (
            not isinstance(indices, Tensor)
            or indices.dim() != 1
            or indices.dtype not in (torch.int64, torch.int32)
        ):
            got = (
                f"{indices.dtype} {tuple(indices.shape)}"
                if isinstance(indices, Tensor)
                else type(indices).__name__
            )
            raise InputError(f"KVCache.reorder needs a 1-D integer tensor of row indices, got {got}")
        if indices.numel() == 0:
            raise InputError("KVCache.reorder needs at least one row index")
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= self.batch_size:
            raise InputError(
                f"KVCache.reorder indices must lie in [0, {self.batch_size}) (the cache batch), got [{low}, {high}]"
            )
        indices = indices.to(device=self.k_cache.device, dtype=torch.long)
        k, v = self.k_cache.index_select(0, indices), self.v_cache.index_select(0, indices)
        if indices.numel() == self.batch_size:
            self.k_cache.copy_(k)
            self.v_cache.copy_(v)
        else:
            self.k_cache, self.v_cache = k, v  # registered buffers: assignment keeps them buffers

    def truncate(self, length: int) -> None:
        """Forget every position >= `length` (zero it)."""
        self.k_cache[:, :, length:].zero_()
        self.v_cache[:, :, length:].zero_()

    def reset(self) -> None:
        self.k_cache.zero_()
        self.v_cache.zero_()
