"""Attention under a key-padding mask as one Triton kernel (inference on CUDA), SDPA elsewhere.

Text models attend with a per-row key-padding mask: a translator's source, a DA-Transformer's graph
vertices past the row's graph size. Given as a dense boolean mask, SDPA's cuDNN kernel reads it as a bias of
[B, 1, Lq, Lk] once per head, after a kernel that expands it (H100, bf16, DA-Transformer's decoder self-
attention at batch 64, 8 heads x 64, 528 vertices: 232-262 us a layer, against 169 for this kernel and 149 for
flash attention with no mask), and at batch 1 a tiny attention costs ~8.5 us in three kernels (this one
2.6-3.6; `benchmarks/padded_attention.py`). `KeyPadding` keeps the mask as what it
is, one bool per key (and optionally "a query sees itself", which keeps padded query rows defined), and
`padded_attention` runs it as a flash-attention forward that reads the key flags per key block: online
softmax in float32, one program per block of queries of one (batch row, head).

The kernel serves bf16 / fp16 tensors on CUDA without autograd (sampling, translation, benchmarks);
training, float32 and the CPU take SDPA with the dense mask (`KeyPadding.dense`): the same attention, the
same rows attended. A query row with no key to attend (no valid key, no diagonal) gets zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from genloom.core.errors import InputError

try:  # Triton ships with CUDA builds of torch; without it SDPA runs on CUDA too
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

__all__ = [
    "KeyPadding",
    "kernel_runs_on",
    "kernel_serves",
    "launch_shape",
    "padded_attention",
    "padded_attention_reference",
]

KERNEL_DTYPES = (torch.bfloat16, torch.float16)
MAX_HEAD_DIM = 128


@dataclass(frozen=True)
class KeyPadding:
    """A key-padding mask: `valid` [B, Lk] bool (True = attend); `self_diagonal` lets query i also attend key
    i (self-attention over a padded sequence: a padded query row keeps one key and stays finite)."""

    valid: Tensor
    self_diagonal: bool = False

    def dense(self, query_len: int) -> Tensor:
        """The same mask as SDPA's bool attn_mask [B, 1, Lq, Lk]."""
        mask = self.valid[:, None, None, :]
        if self.self_diagonal:
            keys = self.valid.shape[1]
            rows = torch.arange(query_len, device=self.valid.device)[:, None]
            mask = mask | (rows == torch.arange(keys, device=self.valid.device)[None, :])
        return mask


def kernel_runs_on(x: Tensor) -> bool:
    """Whether the kernel can take attention computed from `x`: Triton, CUDA, bf16 / fp16, no autograd graph
    being recorded through it. A planner asks this once per pass (`Transformer`), to build the dense mask
    once instead of once per layer where the kernel will not run."""
    return (
        triton is not None
        and x.is_cuda
        and x.dtype in KERNEL_DTYPES
        and not (torch.is_grad_enabled() and x.requires_grad)
    )


def kernel_serves(q: Tensor, k: Tensor) -> bool:
    """Whether `padded_attention` runs the Triton kernel for these tensors (else SDPA with the dense mask)."""
    return (
        kernel_runs_on(q)
        and k.dtype == q.dtype
        and q.shape[-1] <= MAX_HEAD_DIM
        and q.shape[1] % k.shape[1] == 0
        and not (torch.is_grad_enabled() and k.requires_grad)
    )


def padded_attention_reference(q: Tensor, k: Tensor, v: Tensor, padding: KeyPadding, scale: float) -> Tensor:
    """SDPA with the dense mask: q [B, H, Lq, D], k / v [B, Hkv, Lk, D] -> [B, H, Lq, D]."""
    gqa = q.shape[1] != k.shape[1]
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=padding.dense(q.shape[2]), scale=scale, enable_gqa=gqa
    )


def _check(q: Tensor, k: Tensor, v: Tensor, padding: KeyPadding) -> None:
    """Shape errors before any launch: the kernel indexes k, v and the key flags by q's batch and k's length."""
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise InputError(
            f"padded_attention: q must be [B, H, Lq, D] and k, v [B, Hkv, Lk, D] alike, got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    batch, heads, _, dim = q.shape
    if k.shape[0] != batch or k.shape[3] != dim or heads % k.shape[1] != 0:
        raise InputError(
            f"padded_attention: k must be ({batch}, a divisor of {heads}, Lk, {dim}), got {tuple(k.shape)}"
        )
    valid = padding.valid
    if valid.dim() != 2 or valid.shape[0] not in (1, batch) or valid.shape[1] != k.shape[2]:
        raise InputError(
            f"padding.valid must be [{batch} or 1, {k.shape[2]}] (one flag per key), got {tuple(valid.shape)}"
        )


def padded_attention(q: Tensor, k: Tensor, v: Tensor, padding: KeyPadding, scale: float) -> Tensor:
    """Attention of q [B, H, Lq, D] over k / v [B, Hkv, Lk, D] under `padding`: the Triton kernel where
    `kernel_serves`, else `padded_attention_reference`. Mismatched shapes raise InputError."""
    _check(q, k, v, padding)
    if not kernel_serves(q, k):
        return padded_attention_reference(q, k, v, padding, scale)
    valid = padding.valid.to(torch.bool).expand(q.shape[0], -1)
    # the op takes and returns [B, L, H, D]: the projections' own layout (q, k, v arrive as transposed views
    # of it) and the one the output projection reads, so no copy on either side
    out = key_padded_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        valid,
        float(scale),
        bool(padding.self_diagonal),
    )
    return out.transpose(1, 2)


if triton is not None:

    @triton.jit
    def _padded_attention_kernel(
        q, k, v, valid, out,
        stride_qb, stride_qh, stride_ql,
        stride_kb, stride_kh, stride_kl,
        stride_vb, stride_vh, stride_vl,
        stride_ob, stride_oh, stride_ol,
        stride_mb,
        num_heads, kv_group, q_len, k_len, scale_log2,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        SELF_DIAGONAL: tl.constexpr,
    ):  # fmt: skip
        """One program: BLOCK_M queries of one (batch row, head) against every key block, online softmax in
        the log2 domain (scale folded in), float32 statistics and accumulator; the last dim is contiguous."""
        block = tl.program_id(0)
        row_head = tl.program_id(1)
        row = row_head // num_heads
        head = row_head % num_heads
        kv_head = head // kv_group
        queries = block * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        dims_in = dims < HEAD_DIM
        query_in = queries < q_len
        q_tile = tl.load(
            q + row * stride_qb + head * stride_qh + queries[:, None] * stride_ql + dims[None, :],
            mask=query_in[:, None] & dims_in[None, :],
            other=0.0,
        )
        best = tl.full([BLOCK_M], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        k_base = k + row * stride_kb + kv_head * stride_kh
        v_base = v + row * stride_vb + kv_head * stride_vh
        for start in range(0, k_len, BLOCK_N):
            keys = start + tl.arange(0, BLOCK_N)
            key_in = keys < k_len
            allowed = tl.load(valid + row * stride_mb + keys, mask=key_in, other=0) != 0
            allowed = allowed[None, :]
            if SELF_DIAGONAL:
                allowed = allowed | (queries[:, None] == keys[None, :])
            allowed = allowed & key_in[None, :]
            k_tile = tl.load(  # [keys, dims], contiguous along dims; the product takes its transpose
                k_base + keys[:, None] * stride_kl + dims[None, :],
                mask=key_in[:, None] & dims_in[None, :],
                other=0.0,
            )
            scores = tl.dot(q_tile, tl.trans(k_tile)) * scale_log2
            scores = tl.where(allowed, scores, float("-inf"))
            new_best = tl.maximum(best, tl.max(scores, 1))
            shift = tl.where(new_best == float("-inf"), 0.0, new_best)  # a row with nothing allowed yet
            weights = tl.exp2(scores - shift[:, None])
            rescale = tl.exp2(best - shift)
            total = total * rescale + tl.sum(weights, 1)
            v_tile = tl.load(
                v_base + keys[:, None] * stride_vl + dims[None, :],
                mask=key_in[:, None] & dims_in[None, :],
                other=0.0,
            )
            acc = acc * rescale[:, None] + tl.dot(weights.to(v_tile.dtype), v_tile)
            best = new_best
        result = acc / tl.where(total == 0.0, 1.0, total)[:, None]
        tl.store(
            out + row * stride_ob + head * stride_oh + queries[:, None] * stride_ol + dims[None, :],
            result.to(out.dtype.element_ty),
            mask=query_in[:, None] & dims_in[None, :],
        )


def launch_shape(q_len: int, head_dim: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages), the fastest of a sweep on an H100 (bf16, head_dim 32 / 64):
    64 queries x 32 keys a step for long sequences (DA-Transformer's 528 vertices at batch 64: 169 us against
    213 for 128 x 64 x 8 warps), the smallest >= 16 query block for short ones."""
    block_m = 64 if q_len > 32 else max(16, triton.next_power_of_2(q_len))
    return block_m, 32 if head_dim <= 64 else 16, 4, 3


def padded_attention_triton(
    q: Tensor, k: Tensor, v: Tensor, valid: Tensor, scale: float, self_diagonal: bool
) -> Tensor:
    """The kernel's launch (CUDA, or CPU under TRITON_INTERPRET=1): q [B, Lq, H, D], k / v [B, Lk, Hkv, D],
    valid [B, Lk] bool -> [B, Lq, H, D] in q's dtype."""
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    valid = valid.contiguous()
    batch, q_len, heads, head_dim = q.shape
    k_len = k.shape[1]
    out = torch.empty(batch, q_len, heads, head_dim, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    block_m, block_n, warps, stages = launch_shape(q_len, head_dim)
    grid = (triton.cdiv(q_len, block_m), batch * heads)
    _padded_attention_kernel[grid](
        q, k, v, valid, out,
        q.stride(0), q.stride(2), q.stride(1),
        k.stride(0), k.stride(2), k.stride(1),
        v.stride(0), v.stride(2), v.stride(1),
        out.stride(0), out.stride(2), out.stride(1),
        valid.stride(0),
        heads, heads // k.shape[2], q_len, k_len, scale * math.log2(math.e),
        HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)), BLOCK_M=block_m, BLOCK_N=block_n,
        SELF_DIAGONAL=self_diagonal, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


@torch.library.custom_op("genloom::key_padded_attention", mutates_args=())
def key_padded_attention(
    q: Tensor, k: Tensor, v: Tensor, valid: Tensor, scale: float, self_diagonal: bool
) -> Tensor:
    """q [B, Lq, H, D], k / v [B, Lk, Hkv, D], valid [B, Lk] bool -> [B, Lq, H, D] (an op torch.compile keeps
    whole and a CUDA graph captures)."""
    heads = (t.transpose(1, 2) for t in (q, k, v))
    return (
        padded_attention_reference(*heads, KeyPadding(valid, self_diagonal), scale)
        .transpose(1, 2)
        .contiguous()
    )


@key_padded_attention.register_kernel("cuda")
def _key_padded_attention_cuda(
    q: Tensor, k: Tensor, v: Tensor, valid: Tensor, scale: float, self_diagonal: bool
) -> Tensor:
    return padded_attention_triton(q, k, v, valid, scale, self_diagonal)


@key_padded_attention.register_fake
def _key_padded_attention_fake(
    q: Tensor, k: Tensor, v: Tensor, valid: Tensor, scale: float, self_diagonal: bool
) -> Tensor:
    return q.new_empty(q.shape)


@register_flop_formula(torch.ops.genloom.key_padded_attention)
def _key_padded_attention_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    """What FlopCounterMode counts for SDPA: the two products, 2 B H Lq Lk D each (the mask is not subtracted)."""
    batch, q_len, heads, head_dim = q_shape
    return 2 * batch * heads * q_len * k_shape[1] * (head_dim + v_shape[-1])
