"""`decode_attention`: one decode step's self-attention over a static KV cache as ONE kernel, cache write inside.

Why: a LlamaGen-B decode step (H100, bf16, batch 1 with CFG: 2 rows, CUDA graph) spends about 8.8 us per layer
on attention (cuDNN's flash kernel 6.5 us plus two 1.0-1.3 us mask-preparation kernels,
docs/benchmarks.md) and two more kernels on the cache's index copies, for a few hundred kilobytes of keys
and values: the time is kernel launches and latency, not bytes. Here one Triton program per (row, query
head) writes the step's key and value into the cache slot `input_pos` (the first head of each key/value
group writes, the others use the same values from registers: no race), then runs an online softmax over
the filled slots 0..pos, reading `pos` from the device (no host read, so a CUDA graph replays it at every
position), and writes the output. The mask the static decode path builds ("slots up to pos") is implied.

Semantics (`decode_attention`): q [B, H, 1, D], k, v [B, Hkv, 1, D] (the step's key and value), caches
[B, Hkv, S, D], `input_pos` [1] (an integer device tensor, pos < S); H a multiple of Hkv (grouped-query
attention). `rope` (cos, sin) [1, D/2] (this position's rows) rotates q and k first, inside the kernel, as
`apply_rope` with `rope_layout` does (float32, rounded back to their dtype): one kernel fewer per layer
than rotating them outside (LlamaGen-B: 1.4 us a layer). Without `rope`, q and k arrive rotated. Scores and
softmax in float32, output in q's dtype. The torch reference
(`decode_attention_reference`: `index_copy_` then SDPA under the same mask) runs off CUDA or without Triton
and is what the tests compare against. Registered as `torch.library.triton_op` with the caches as mutated
arguments, so torch.compile traces into it and a CUDA graph captures it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.library import triton_op

from genloom.core.errors import InputError

from .rope import apply_rope
from .triton_launch import launcher

try:  # Triton ships with CUDA builds of torch; without it the op runs its torch reference
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

__all__ = ["decode_attention", "decode_attention_reference", "decode_attention_triton"]

BLOCK_N = 64  # cache slots per loop step for caches of <= LONG_CACHE slots (64 x D bf16 keys: 8 kB, D = 64)
LONG_BLOCK_N, LONG_CACHE = 128, 64  # a longer cache: 128 slots a step (H100 sweep below)
NUM_WARPS = 4
ROPE_LAYOUTS = {"interleaved": 1, "half": 2}  # the kernel's ROPE constant (0: q and k arrive rotated)


def cache_block(slots: int) -> int:
    """Cache slots per loop step of the kernel for a cache of `slots` slots. H100 sweep
    (benchmarks/decode_attention_sweep.py, a whole generation's calls in a CUDA graph, rotation inside, 4
    warps): over 256 slots (LlamaGen-B / -XL, 2 rows) 128 slots a step took 0.87-0.88x the time of 64 (3.89
    against 4.46 us a call, B), over 64 slots (a text decoder) 64 a step was best (2.76 us; 128: 3.13)."""
    return LONG_BLOCK_N if slots > LONG_CACHE else BLOCK_N


def decode_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    input_pos: Tensor,
    scale: float,
    rope: tuple[Tensor, Tensor] | None = None,
    rope_layout: str = "interleaved",
) -> Tensor:
    """The same step with torch ops: rotate q and k (`rope`), write the caches at `input_pos`, attend to slots
    0..pos with SDPA."""
    if rope is not None:
        q, k = apply_rope(q, *rope, rope_layout), apply_rope(k, *rope, rope_layout)
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


def _check(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    input_pos: Tensor,
    rope: tuple[Tensor, Tensor] | None,
    rope_layout: str,
) -> None:
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
    if rope is None:
        return
    if rope_layout not in ROPE_LAYOUTS:
        raise InputError(
            f"decode_attention: rope_layout must be one of {sorted(ROPE_LAYOUTS)}, got {rope_layout!r}"
        )
    for name, table in zip(("cos", "sin"), rope, strict=True):
        if table.numel() != dim // 2 or table.shape[-1] != dim // 2:
            raise InputError(
                f"decode_attention: rope {name} must be this position's row [1, D/2 = {dim // 2}], "
                f"got {tuple(table.shape)}"
            )


if triton is not None:

    @triton.jit
    def _rotated(ptr, d, in_d, cos, sin, partner, sign, ROPE: tl.constexpr, CACHE: tl.constexpr):  # noqa: ANN001, ANN202
        """x[d] (one head's vector) in its dtype, rotated by the position's angles when ROPE != 0: as
        `apply_rope`, in float32 and rounded back. CACHE: the loads' cache modifier."""
        x = tl.load(ptr + d, mask=in_d, other=0.0, cache_modifier=CACHE)
        if ROPE != 0:
            mate = tl.load(ptr + partner, mask=in_d, other=0.0, cache_modifier=CACHE).to(tl.float32)
            x = (x.to(tl.float32) * cos + sign * mate * sin).to(ptr.dtype.element_ty)
        return x

    @triton.jit
    def attend_one_query(
        q_ptr, k_ptr, v_ptr, kc_ptr, vc_ptr, cache, pos, cos_ptr, sin_ptr, out_ptr, c_ss, scale, write,
        D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, ROPE: tl.constexpr,
        CACHE: tl.constexpr,
    ):  # fmt: skip
        """One (row, query head) of a decode step: q, k, v at q_ptr / k_ptr / v_ptr (D values each, k and v
        of the head's key/value group), the group's cache at kc_ptr / vc_ptr + `cache` (slot stride c_ss),
        position `pos` (int64): rotate q and k (ROPE), write k and v into slot pos when `write`, attend to
        slots 0..pos (online softmax in float32; slot pos from registers) and store the output at out_ptr.
        Shared by `decode_attention`'s kernel and `decode_layer`'s (CACHE: the cache modifier of the q / k /
        v loads, ".cg" where other programs of the same launch wrote them)."""
        d = tl.arange(0, BLOCK_D)
        in_d = d < D
        cos = tl.zeros([BLOCK_D], dtype=tl.float32)
        sin = cos
        sign = cos
        partner = d
        if ROPE != 0:  # channel d pairs with `partner`: (2i, 2i+1) interleaved, (i, i + D/2) half
            if ROPE == 1:
                partner = d ^ 1
                pair = d // 2
                first = d % 2 == 0
            else:
                first = d < D // 2
                partner = tl.where(first, d + D // 2, d - D // 2)
                pair = tl.where(first, d, d - D // 2)
            sign = tl.where(first, -1.0, 1.0)
            cos = tl.load(cos_ptr + pair, mask=in_d, other=0.0).to(tl.float32)
            sin = tl.load(sin_ptr + pair, mask=in_d, other=0.0).to(tl.float32)
        q = _rotated(q_ptr, d, in_d, cos, sin, partner, sign, ROPE, CACHE)
        q = (q.to(tl.float32) * scale).to(
            tl.float32
        )  # a float argument may arrive as fp64 (inductor's launcher)
        k_new = _rotated(k_ptr, d, in_d, cos, sin, partner, sign, ROPE, CACHE)
        v_new = tl.load(v_ptr + d, mask=in_d, other=0.0, cache_modifier=CACHE)
        if write:  # one writer per key/value head; every program uses k_new / v_new itself
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
        tl.store(out_ptr + d, out.to(out_ptr.dtype.element_ty), mask=in_d)

    @triton.jit
    def _decode_attention_kernel(
        q_ptr, k_ptr, v_ptr, kc_ptr, vc_ptr, pos_ptr, cos_ptr, sin_ptr, out_ptr,
        q_sb, q_sh, k_sb, k_sh, v_sb, v_sh, c_sb, c_sh, c_ss, o_sb, o_sh,
        scale,
        GROUP: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
        ROPE: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0)
        head = tl.program_id(1)
        kv_head = head // GROUP
        attend_one_query(
            q_ptr + row * q_sb + head * q_sh, k_ptr + row * k_sb + kv_head * k_sh,
            v_ptr + row * v_sb + kv_head * v_sh, kc_ptr, vc_ptr, row * c_sb + kv_head * c_sh,
            tl.load(pos_ptr).to(tl.int64), cos_ptr, sin_ptr, out_ptr + row * o_sb + head * o_sh, c_ss, scale,
            head % GROUP == 0, D, BLOCK_D, BLOCK_N, ROPE, "",
        )  # fmt: skip


def decode_attention_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    input_pos: Tensor,
    scale: float,
    rope: tuple[Tensor, Tensor] | None = None,
    rope_layout: str = "interleaved",
    *,
    block_n: int | None = None,
    num_warps: int = NUM_WARPS,
) -> Tensor:
    """Launch the kernel directly (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1); `block_n` cache
    slots per loop step and `num_warps` for sweeps (benchmarks/decode_attention_sweep.py)."""
    if triton is None:
        raise InputError("decode_attention_triton needs Triton")
    _check(q, k, v, k_cache, v_cache, input_pos, rope, rope_layout)
    cos, sin = (None, None) if rope is None else rope
    return _launch(q, k, v, k_cache, v_cache, input_pos, cos, sin, scale, rope_layout, block_n, num_warps)


def _launch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    input_pos: Tensor,
    cos: Tensor | None,
    sin: Tensor | None,
    scale: float,
    rope_layout: str,
    block_n: int | None = None,
    num_warps: int = NUM_WARPS,
) -> Tensor:
    """The kernel launch on checked inputs (the op's path: `decode_attention` checked them)."""
    block_n = block_n or cache_block(k_cache.shape[2])
    layout = 0 if cos is None else ROPE_LAYOUTS[rope_layout]
    batch, heads, _, dim = q.shape
    if k_cache.stride(-1) != 1 or q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise InputError("decode_attention_triton: the head dimension must be contiguous in every tensor")
    if cos is not None and (not cos.is_contiguous() or not sin.is_contiguous()):
        cos, sin = cos.contiguous(), sin.contiguous()
    out = torch.empty((batch, heads, 1, dim), dtype=q.dtype, device=q.device)
    launcher(_decode_attention_kernel)[(batch, heads)](
        q, k, v, k_cache, v_cache, input_pos, q if cos is None else cos, q if sin is None else sin, out,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0), out.stride(1),
        float(scale),
        GROUP=heads // k_cache.shape[1], D=dim, BLOCK_D=triton.next_power_of_2(dim), BLOCK_N=block_n,
        ROPE=layout, num_warps=num_warps,
    )  # fmt: skip
    return out


@triton_op("genloom_core::decode_attention", mutates_args={"k_cache", "v_cache"})
def _decode_attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    input_pos: Tensor,
    cos: Tensor | None,
    sin: Tensor | None,
    scale: float,
    rope_layout: str,
) -> Tensor:
    if triton is not None and q.is_cuda:
        return _launch(q, k, v, k_cache, v_cache, input_pos, cos, sin, scale, rope_layout)
    rope = None if cos is None else (cos, sin)
    return decode_attention_reference(q, k, v, k_cache, v_cache, input_pos, scale, rope, rope_layout)


def decode_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    input_pos: Tensor,
    scale: float,
    rope: tuple[Tensor, Tensor] | None = None,
    rope_layout: str = "interleaved",
) -> Tensor:
    """Write k, v [B, Hkv, 1, D] into the caches [B, Hkv, S, D] at slot `input_pos` [1] and return the
    attention of q [B, H, 1, D] over slots 0..pos: [B, H, 1, D]; `rope` (cos, sin) [1, D/2] rotates q and k
    first (`rope_layout` as `apply_rope`). One Triton kernel on CUDA."""
    _check(q, k, v, k_cache, v_cache, input_pos, rope, rope_layout)
    if triton is None or not q.is_cuda:  # the torch ops directly: no custom-op dispatch on the CPU
        return decode_attention_reference(
            q, k, v, k_cache, v_cache, input_pos, float(scale), rope, rope_layout
        )
    cos, sin = (None, None) if rope is None else rope
    return _decode_attention_op(q, k, v, k_cache, v_cache, input_pos, cos, sin, float(scale), rope_layout)
