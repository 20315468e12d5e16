"""`decode_attention`: one decode step's self-attention over a static KV cache as ONE kernel, cache write inside.

Why: a LlamaGen-B decode step (H100, bf16, batch 1 with CFG: 2 rows, CUDA graph) spends about 8.8 us per layer
on attention (cuDNN's flash kernel 6.5 us plus two 1.0-1.3 us mask-preparation kernels,
docs/benchmarks.md) and two more kernels on the cache's index copies, for a few hundred kilobytes of keys
and values: the time is kernel launches and latency, not bytes. Here one Triton program per (row, query
head) writes the step's key and value into the cache slot `input_pos` (the first head of each key/value
group writes, the others use the same values from registers: no race), then runs an online softmax over
the filled slots 0..pos, reading `pos` from the device (no host read, so a CUDA graph replays it at every
position), and writes the output. The mask the static decode path builds ("slots up to pos") is implied.

Semantics (`decode_attention`): q [B, H, 1, D] (rotated), k, v [B, Hkv, 1, D] (the step's rotated key and
value), caches [B, Hkv, S, D], `input_pos` [1] (an integer device tensor, pos < S); H a multiple of Hkv
(grouped-query attention). Scores and softmax in float32, output in q's dtype. The torch reference
(`decode_attention_reference`: `index_copy_` then SDPA under the same mask) runs off CUDA or without Triton
and is what the tests compare against. Registered as `torch.library.triton_op` with the caches as mutated
arguments, so torch.compile traces into it and a CUDA graph captures it.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.library import triton_op, wrap_triton

from genloom.core.errors import InputError

try:  # Triton ships with CUDA builds of torch; without it the op runs its torch reference
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

__all__ = ["decode_attention", "decode_attention_reference", "decode_attention_triton"]

BLOCK_N = 64  # cache slots per loop step (64 x D bf16 keys: 8 kB for D = 64)
NUM_WARPS = 4


def decode_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, input_pos: Tensor, scale: float
) -> Tensor:
    """The same step with torch ops: write the caches at `input_pos`, attend to slots 0..pos with SDPA."""
    k_cache.index_copy_(2, input_pos, k.to(k_cache.dtype))
    v_cache.index_copy_(2, input_pos, v.to(v_cache.dtype))
    filled = torch.arange(k_cache.shape[2], device=q.device) <= input_pos
    return F.scaled_dot_product_attention(
        q,
        k_cache.to(q.dtype),
        v_cache.to(q.dtype),
        attn_mask=filled[None, None, None, :],
        scale=scale,
        enable_gqa=q.shape[1] != k_cache.shape[1],
    )


def _check(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, input_pos: Tensor) -> None:
    if q.dim() != 4 or q.shape[2] != 1:
        raise InputError(f"decode_attention: q must be [B, H, 1, D] (one query), got {tuple(q.shape)}")
    batch, heads, _, dim = q.shape
    if k_cache.dim() != 4 or k_cache.shape[0] != batch or k_cache.shape[3] != dim:
        raise InputError(
            f"decode_attention: k_cache must be [B={batch}, Hkv, S, D={dim}], got {tuple(k_cache.shape)}"
        )
    kv_heads = k_cache.shape[1]
    if heads % kv_heads:
        raise InputError(f"decode_attention: {heads} query heads are not a multiple of {kv_heads} kv heads")
    want = (batch, kv_heads, 1, dim)
    for name, t in (("k", k), ("v", v)):
        if tuple(t.shape) != want:
            raise InputError(f"decode_attention: {name} must be {want}, got {tuple(t.shape)}")
    if v_cache.shape != k_cache.shape or v_cache.stride() != k_cache.stride():
        raise InputError(
            f"decode_attention: v_cache must match k_cache's shape and strides {tuple(k_cache.shape)}, "
            f"got {tuple(v_cache.shape)}"
        )
    if input_pos.numel() != 1 or input_pos.dtype not in (torch.int32, torch.int64):
        raise InputError(
            f"decode_attention: input_pos must be one integer position, got {input_pos.dtype} "
            f"{tuple(input_pos.shape)}"
        )


def _launcher(kernel):  # noqa: ANN001, ANN202
    """`wrap_triton(kernel)` (torch.compile traces the launch); the plain kernel under the interpreter."""
    return kernel if os.environ.get("TRITON_INTERPRET") == "1" else wrap_triton(kernel)


if triton is not None:

    @triton.jit
    def _decode_attention_kernel(
        q_ptr, k_ptr, v_ptr, kc_ptr, vc_ptr, pos_ptr, out_ptr,
        q_sb, q_sh, k_sb, k_sh, v_sb, v_sh, c_sb, c_sh, c_ss, o_sb, o_sh,
        scale,
        GROUP: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0)
        head = tl.program_id(1)
        kv_head = head // GROUP
        pos = tl.load(pos_ptr).to(tl.int64)
        d = tl.arange(0, BLOCK_D)
        in_d = d < D
        q = tl.load(q_ptr + row * q_sb + head * q_sh + d, mask=in_d, other=0.0).to(tl.float32)
        q = (q * scale).to(tl.float32)  # a float argument may arrive as fp64 (inductor's launcher)
        k_new = tl.load(k_ptr + row * k_sb + kv_head * k_sh + d, mask=in_d, other=0.0)
        v_new = tl.load(v_ptr + row * v_sb + kv_head * v_sh + d, mask=in_d, other=0.0)
        cache = row * c_sb + kv_head * c_sh
        if head % GROUP == 0:  # one writer per key/value head; every program uses k_new / v_new itself
            tl.store(kc_ptr + cache + pos * c_ss + d, k_new.to(kc_ptr.dtype.element_ty), mask=in_d)
            tl.store(vc_ptr + cache + pos * c_ss + d, v_new.to(vc_ptr.dtype.element_ty), mask=in_d)
        m_i = tl.zeros([1], dtype=tl.float32) - float("inf")
        l_i = tl.zeros([1], dtype=tl.float32)
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for start in range(0, pos, BLOCK_N):  # the slots filled before this step: 0..pos-1
            n = start + tl.arange(0, BLOCK_N)
            live = n < pos
            offsets = cache + n[:, None] * c_ss + d[None, :]
            tile_mask = live[:, None] & in_d[None, :]
            keys = tl.load(kc_ptr + offsets, mask=tile_mask, other=0.0).to(tl.float32)
            scores = tl.where(live, tl.sum(keys * q[None, :], axis=1), float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, axis=0))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(scores - m_new)
            values = tl.load(vc_ptr + offsets, mask=tile_mask, other=0.0).to(tl.float32)
            l_i = l_i * alpha + tl.sum(p, axis=0)
            acc = acc * alpha + tl.sum(p[:, None] * values, axis=0)
            m_i = m_new
        # slot pos: this step's own key and value
        score = tl.sum(q * k_new.to(tl.float32), axis=0)
        m_new = tl.maximum(m_i, score)
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(score - m_new)
        l_i = l_i * alpha + p
        acc = acc * alpha + p * v_new.to(tl.float32)
        out = acc / l_i
        tl.store(out_ptr + row * o_sb + head * o_sh + d, out.to(out_ptr.dtype.element_ty), mask=in_d)


def decode_attention_triton(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, input_pos: Tensor, scale: float
) -> Tensor:
    """Launch the kernel directly (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1)."""
    if triton is None:
        raise InputError("decode_attention_triton needs Triton")
    _check(q, k, v, k_cache, v_cache, input_pos)
    return _launch(q, k, v, k_cache, v_cache, input_pos, scale)


def _launch(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, input_pos: Tensor, scale: float
) -> Tensor:
    """The kernel launch on checked inputs (the op's path: `decode_attention` checked them)."""
    batch, heads, _, dim = q.shape
    if k_cache.stride(-1) != 1 or q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise InputError("decode_attention_triton: the head dimension must be contiguous in every tensor")
    out = torch.empty((batch, heads, 1, dim), dtype=q.dtype, device=q.device)
    _launcher(_decode_attention_kernel)[(batch, heads)](
        q, k, v, k_cache, v_cache, input_pos, out,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0), out.stride(1),
        float(scale),
        GROUP=heads // k_cache.shape[1], D=dim, BLOCK_D=triton.next_power_of_2(dim), BLOCK_N=BLOCK_N,
        num_warps=NUM_WARPS,
    )  # fmt: skip
    return out


@triton_op("genloom_core::decode_attention", mutates_args={"k_cache", "v_cache"})
def _decode_attention_op(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, input_pos: Tensor, scale: float
) -> Tensor:
    if triton is not None and q.is_cuda:
        return _launch(q, k, v, k_cache, v_cache, input_pos, scale)
    return decode_attention_reference(q, k, v, k_cache, v_cache, input_pos, scale)


def decode_attention(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, input_pos: Tensor, scale: float
) -> Tensor:
    """Write k, v [B, Hkv, 1, D] into the caches [B, Hkv, S, D] at slot `input_pos` [1] and return the
    attention of q [B, H, 1, D] over slots 0..pos: [B, H, 1, D]. One Triton kernel on CUDA."""
    _check(q, k, v, k_cache, v_cache, input_pos)
    if triton is None or not q.is_cuda:  # the torch ops directly: no custom-op dispatch on the CPU
        return decode_attention_reference(q, k, v, k_cache, v_cache, input_pos, float(scale))
    return _decode_attention_op(q, k, v, k_cache, v_cache, input_pos, float(scale))
