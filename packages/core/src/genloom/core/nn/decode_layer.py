"""`decode_layer`: one decode step through a whole pre-norm transformer layer as ONE persistent Triton kernel.

Why: a LlamaGen-B decode step (12 layers, dim 768, batch 1 with CFG = 2 rows, bf16, one CUDA graph) ran
five kernels a layer (norm + qkv, attention, output projection + residual, norm + gate/up, down projection
+ residual: `decode_kernels` and `decode_attention`) at 4-6 us each, ~24 us a layer for 14 MB of weights
that the H100 streams in ~4.7 us (docs/benchmarks.md, session 10). Each of those kernels is mostly latency:
it starts, its programs issue their first weight loads, wait ~1 us for DRAM, compute, and the next kernel
cannot load anything before the last program of this one ends. Here one launch runs the layer's five stages
with a grid-wide barrier between them, and every program issues the loads of its NEXT stage's first weight
chunk before it waits at the barrier: weights do not depend on the activations, so their DRAM latency
overlaps the barrier, the attention and the previous stage's tail.

Layout of the work (P programs, one per SM, all resident at once: the barriers need that):
- stage 1, norm + qkv: program p computes outputs [p * C, (p + 1) * C) of the fused qkv projection for every
  row (C = ceil(N / P); a power-of-two tile of at least C rows, masked), the RMSNorm folded into the product
  as `decode_kernels` does (`rsqrt(mean(x^2) + eps) * ((x * g) @ W.T)`); qkv goes to a scratch buffer;
- stage 2, attention: the (row, head) pairs are dealt round-robin to the programs; each rotates q and k,
  writes the cache slot and attends to slots 0..pos (`decode_attention.attend_one_query`);
- stage 3, output projection + residual: h = x + round(attn @ Wo.T);
- stage 4, norm + gate/up + SiLU-multiply: g = round(silu(round(gate))) * round(up), the gate and up rows of
  a program's outputs loaded as one tile;
- stage 5, down projection + residual: y = h + round(g @ W2.T).
Products are no-dot GEMVs (CUDA-core FMAs over a [tile, BLOCK_K] weight chunk per step, one row of x at a
time), with the next chunk's load issued before the current one is used (two chunks in flight per program).
Scratch activations written inside the launch are read with `.cg` (from L2, past the SM's L1).

The barrier: a program's threads finish their stores (`debug_barrier`), one thread adds 1 to the layer's
arrival counter with release semantics at GPU scope, the program issues its prefetch, then one thread per
program polls the counter (a relaxed atomic read; every thread polling by volatile loads flooded the
counter's L2 slice: 1.9 against 1.2 us a barrier on an H100) until it reaches b * P for barrier b, and
acquires. The counter only grows within a launch; after its last barrier each program adds 1 to an exit
counter, and the last one sets both back to 0, so every launch finds them zero (no memset kernel; a CUDA
graph replays it). The counters are the first two of the layer's KV-cache counters (`KVCache.sync`, int32,
zero between launches), passed to the op as a mutated argument so torch.compile traces them. Two launches of
one layer must not run at once on two streams.

Measured (docs/benchmarks.md, session 11): slower than the five kernels it replaces (LlamaGen-B 28.0 against
21.6 us a layer; XL 50.2 against 37.8), so `Block` takes it only when asked (`fused_decode_layer`).

Numerics: the rounding points of the eager modules (qkv, the attention output, each residual product and the
SwiGLU's gate / up rounded to the activation dtype); summation order differs from cuBLAS (bf16 tolerance;
float32 to rounding). Without Triton or off CUDA the same math runs as the torch reference; `staged=True`
runs it stage by stage (one launch per stage, no barrier: how the CPU tests run the
kernel's code through Triton's interpreter, which runs programs one after another and so cannot spin).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op

from genloom.core.errors import InputError

from .decode_attention import ROPE_LAYOUTS, cache_block, decode_attention_reference
from .decode_kernels import linear_residual_reference, rms_norm_linear_reference, rms_norm_swiglu_reference
from .triton_launch import launcher, multiprocessors

try:  # Triton ships with CUDA builds of torch; without it the op runs its torch reference
    import triton
    import triton.language as tl

    from .decode_attention import attend_one_query
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

__all__ = ["MAX_ROWS", "WEIGHT_ORDER", "decode_layer", "decode_layer_reference"]

MAX_ROWS = 4  # rows (batch x CFG) a launch takes: the GEMVs loop over rows one at a time
TILE_ELEMENTS = 8192  # weight elements a program loads per chunk (16 kB in bf16; two chunks in flight)
NUM_WARPS = 8
PROGRAMS_PER_SM = 1
SUPPORTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


WEIGHT_ORDER = ("attn_norm", "wqkv", "wo", "mlp_norm", "w13", "w2")  # the `weights` tuple of every function:
# attn_norm [D], wqkv [(H + 2 Hkv) * Dh, D], wo [D, H * Dh], mlp_norm [D], w13 [2 F, D] (rows [W1; W3]), w2 [D, F]


# ---------------------------------------------------------------------------------------------- reference
def decode_layer_reference(
    x: Tensor,
    weights: tuple[Tensor, ...],
    k_cache: Tensor,
    v_cache: Tensor,
    input_pos: Tensor,
    rope: tuple[Tensor, Tensor] | None,
    *,
    eps: tuple[float, float],
    scale: float,
    n_heads: int,
    rope_layout: str = "interleaved",
) -> Tensor:
    """The layer step with the torch references of `decode_kernels` and `decode_attention`: x [B, 1, D]."""
    attn_norm, wqkv, wo, mlp_norm, w13, w2 = weights
    batch, _, _ = x.shape
    kv_heads, head_dim = k_cache.shape[1], k_cache.shape[3]
    qkv = rms_norm_linear_reference(x, attn_norm, eps[0], wqkv)
    q, k, v = qkv.split([n_heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q, k, v = (t.view(batch, 1, -1, head_dim).transpose(1, 2) for t in (q, k, v))
    heads = decode_attention_reference(q, k, v, k_cache, v_cache, input_pos, scale, rope, rope_layout)
    h = linear_residual_reference(heads.transpose(1, 2).reshape(batch, 1, -1), wo, x)
    return linear_residual_reference(rms_norm_swiglu_reference(h, mlp_norm, eps[1], w13), w2, h)


# ---------------------------------------------------------------------------------------------- checks
def _check(
    x: Tensor,
    weights: tuple[Tensor, ...],
    k_cache: Tensor,
    v_cache: Tensor,
    input_pos: Tensor,
    rope: tuple[Tensor, Tensor] | None,
    n_heads: int,
    rope_layout: str,
) -> None:
    if len(weights) != 6:
        raise InputError(f"decode_layer: weights must be the 6 tensors of WEIGHT_ORDER, got {len(weights)}")
    attn_norm, wqkv, wo, mlp_norm, w13, w2 = weights
    if x.dim() != 3 or x.shape[1] != 1:
        raise InputError(f"decode_layer: x must be [B, 1, D] (one decode step), got {tuple(x.shape)}")
    batch, _, dim = x.shape
    if x.dtype not in SUPPORTED_DTYPES:
        raise InputError(f"decode_layer: x must be bfloat16, float16 or float32, got {x.dtype}")
    if k_cache.dim() != 4 or k_cache.shape[0] != batch or v_cache.shape != k_cache.shape:
        raise InputError(
            f"decode_layer: k_cache and v_cache must both be [B={batch}, Hkv, S, Dh], got "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    kv_heads, head_dim = k_cache.shape[1], k_cache.shape[3]
    if n_heads % kv_heads:
        raise InputError(f"decode_layer: {n_heads} query heads are not a multiple of {kv_heads} kv heads")
    hidden = w13.shape[0] // 2
    want = {
        "attn_norm": (dim,),
        "wqkv": ((n_heads + 2 * kv_heads) * head_dim, dim),
        "wo": (dim, n_heads * head_dim),
        "mlp_norm": (dim,),
        "w13": (2 * hidden, dim),
        "w2": (dim, hidden),
    }
    for (name, shape), tensor in zip(want.items(), weights, strict=True):
        if tuple(tensor.shape) != shape:
            raise InputError(f"decode_layer: {name} must be {shape}, got {tuple(tensor.shape)}")
        if tensor.dtype != x.dtype:
            raise InputError(f"decode_layer: {name} is {tensor.dtype} but x is {x.dtype}; give all one dtype")
    if input_pos.numel() != 1 or input_pos.dtype not in (torch.int32, torch.int64):
        raise InputError(
            f"decode_layer: input_pos must be one integer position, got {input_pos.dtype} "
            f"{tuple(input_pos.shape)}"
        )
    if rope_layout not in ROPE_LAYOUTS:
        raise InputError(
            f"decode_layer: rope_layout must be one of {sorted(ROPE_LAYOUTS)}, got {rope_layout!r}"
        )
    for name, table in zip(("cos", "sin"), rope or (), strict=False):
        if table.numel() != head_dim // 2:
            raise InputError(
                f"decode_layer: rope {name} must be this position's row [1, Dh/2 = {head_dim // 2}], "
                f"got {tuple(table.shape)}"
            )


# ---------------------------------------------------------------------------------------------- kernel
if triton is not None:

    @triton.jit
    def _chunk(pid, CHUNK: tl.constexpr, BLOCK: tl.constexpr, N):
        """Outputs [pid * CHUNK, (pid + 1) * CHUNK) of N as a BLOCK-long index vector and its mask."""
        local = tl.arange(0, BLOCK)
        outs = pid * CHUNK + local
        return outs, (local < CHUNK) & (outs < N)

    @triton.jit
    def _gate_up_chunk(pid, CHUNK: tl.constexpr, BLOCK: tl.constexpr, HID):
        """The weight rows of a program's gate/up outputs as ONE index vector of 2 x BLOCK: its gate rows
        [pid * CHUNK, ...) of W1, then the same rows of W3 (offset HID in the stacked [W1; W3])."""
        r = tl.arange(0, 2 * BLOCK)
        local = r % BLOCK
        outs = pid * CHUNK + local
        return outs + (r >= BLOCK).to(tl.int32) * HID, (local < CHUNK) & (outs < HID)

    @triton.jit
    def _weight_chunk(w, outs, valid, start, K, BLOCK_K: tl.constexpr):
        """Weight rows `outs` at columns [start, start + BLOCK_K), zeros outside K (past it: no traffic);
        read once per step, so evict first."""
        cols = start + tl.arange(0, BLOCK_K)
        mask = valid[:, None] & (cols[None, :] < K)
        pointers = w + outs.to(tl.int64)[:, None] * K + cols[None, :]
        return tl.load(pointers, mask=mask, other=0.0, eviction_policy="evict_first")

    @triton.jit
    def _gemv(first, w, outs, valid, x, norm_w, M, K, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
              NORM: tl.constexpr, CACHE: tl.constexpr):  # fmt: skip
        """acc[n, m] = sum_k w[outs[n], k] * x[m, k] (* norm_w[k] when NORM) in float32, [tile, BLOCK_M]: x
        [M, K] contiguous; `first` is the chunk at columns [0, BLOCK_K), already loaded (the prefetch). Each
        step issues the next chunk's load before it uses the current one."""
        rows = tl.arange(0, BLOCK_M)
        acc = tl.zeros([first.shape[0], BLOCK_M], tl.float32)
        tile = first
        for start in range(0, K, BLOCK_K):
            upcoming = _weight_chunk(w, outs, valid, start + BLOCK_K, K, BLOCK_K)
            cols = start + tl.arange(0, BLOCK_K)
            inside = cols[None, :] < K
            weights = tile.to(tl.float32)
            if NORM:
                weights *= tl.load(norm_w + cols[None, :] + 0 * outs[:, None], mask=inside, other=0.0).to(
                    tl.float32
                )
            for m in tl.static_range(BLOCK_M):  # x's row m, tile-shaped: the weight tile's register layout
                row = tl.load(
                    x + m * K + cols[None, :] + 0 * outs[:, None],
                    mask=inside & (m < M),
                    other=0.0,
                    cache_modifier=CACHE,
                ).to(tl.float32)
                acc = tl.where(rows[None, :] == m, acc + tl.sum(weights * row, axis=1)[:, None], acc)
            tile = upcoming
        return acc

    @triton.jit
    def _rstd(x, M, K, eps, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, CACHE: tl.constexpr):
        """rsqrt(mean(x^2) + eps) per row of x [M, K] (float32 statistics), [BLOCK_M]."""
        rows = tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_K)
        mask = (rows[:, None] < M) & (cols[None, :] < K)
        values = tl.load(x + rows[:, None] * K + cols[None, :], mask=mask, other=0.0, cache_modifier=CACHE)
        values = values.to(tl.float32)
        return tl.rsqrt(tl.sum(values * values, axis=1) / K + eps)

    @triton.jit
    def _round(values, like):
        """float32 values rounded to the element type of pointer `like` (as an eager op's output is)."""
        return values.to(like.dtype.element_ty).to(tl.float32)

    @triton.jit
    def _store_tile(out, values, outs, valid, M, N, BLOCK_M: tl.constexpr):
        """values [tile, BLOCK_M] (output feature, row) -> out[row, feature] of a contiguous [M, N]."""
        rows = tl.arange(0, BLOCK_M)
        mask = valid[:, None] & (rows[None, :] < M)
        tl.store(out + rows[None, :] * N + outs[:, None], values.to(out.dtype.element_ty), mask=mask)

    @triton.jit
    def _residual(src, outs, valid, M, N, BLOCK_M: tl.constexpr, CACHE: tl.constexpr):
        """src[row, feature] as [tile, BLOCK_M] floats (the residual stream's entries of a program)."""
        rows = tl.arange(0, BLOCK_M)
        mask = valid[:, None] & (rows[None, :] < M)
        pointers = src + rows[None, :] * N + outs[:, None]
        return tl.load(pointers, mask=mask, other=0.0, cache_modifier=CACHE).to(tl.float32)

    @triton.jit
    def _arrive(sync):
        """Count this program in at the barrier once every thread's stores are issued (release, GPU scope)."""
        tl.debug_barrier()
        tl.atomic_add(sync, 1, sem="release", scope="gpu")

    @triton.jit
    def _wait(sync, target, POLL: tl.constexpr = 1):
        """Spin until `target` arrivals are counted, then acquire what the arrived programs stored. POLL 1:
        one thread per program reads the counter (a scalar atomic); 0: every thread does (a volatile load),
        which floods the counter's L2 slice with reads (H100: ~1.9 against ~1.2 us a barrier)."""
        if POLL == 1:
            seen = tl.atomic_add(sync, 0, sem="relaxed", scope="gpu")
            while seen < target:
                seen = tl.atomic_add(sync, 0, sem="relaxed", scope="gpu")
        else:
            seen = tl.load(sync, volatile=True)
            while seen < target:
                seen = tl.load(sync, volatile=True)
        tl.atomic_add(sync, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()

    @triton.jit
    def _leave(sync):
        """After the last barrier: the last program out sets both counters back to 0 for the next launch
        (every program has passed every wait by then)."""
        tl.debug_barrier()
        if tl.atomic_add(sync + 1, 1, sem="acq_rel", scope="gpu") == tl.num_programs(0) - 1:
            tl.store(sync, 0)
            tl.store(sync + 1, 0)

    @triton.jit
    def _decode_layer_kernel(
        x, y, attn_norm, wqkv, wo, mlp_norm, w13, w2,
        k_cache, v_cache, pos_ptr, cos_ptr, sin_ptr,
        qkv_buf, attn_buf, h_buf, g_buf, sync,
        M, eps_attn, eps_mlp, scale, c_sb, c_sh, c_ss,
        D: tl.constexpr, HID: tl.constexpr, H: tl.constexpr, HKV: tl.constexpr, DH: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DH: tl.constexpr, BLOCK_S: tl.constexpr,
        QKV_CHUNK: tl.constexpr, QKV_BLOCK: tl.constexpr, QKV_BK: tl.constexpr,
        O_CHUNK: tl.constexpr, O_BLOCK: tl.constexpr, O_BK: tl.constexpr,
        GU_CHUNK: tl.constexpr, GU_BLOCK: tl.constexpr, GU_BK: tl.constexpr,
        DN_CHUNK: tl.constexpr, DN_BLOCK: tl.constexpr, DN_BK: tl.constexpr,
        ROPE: tl.constexpr, STAGE: tl.constexpr,
    ):  # fmt: skip
        """The layer's five stages (STAGE 0: all, with grid barriers; 1-5: that stage alone)."""
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        fused: tl.constexpr = STAGE == 0
        n_qkv: tl.constexpr = (H + 2 * HKV) * DH
        n_attn: tl.constexpr = H * DH
        if fused or STAGE == 1:  # norm + qkv
            outs, valid = _chunk(pid, QKV_CHUNK, QKV_BLOCK, n_qkv)
            first = _weight_chunk(wqkv, outs, valid, 0, D, QKV_BK)
            acc = _gemv(first, wqkv, outs, valid, x, attn_norm, M, D, BLOCK_M, QKV_BK, True, "")
            acc *= _rstd(x, M, D, eps_attn, BLOCK_M, BLOCK_D, "")[None, :]
            _store_tile(qkv_buf, acc, outs, valid, M, n_qkv, BLOCK_M)
        if fused:
            _arrive(sync)
        o_outs, o_valid = _chunk(pid, O_CHUNK, O_BLOCK, D)
        if fused or STAGE == 3:  # prefetch: the output projection's first chunk
            o_first = _weight_chunk(wo, o_outs, o_valid, 0, n_attn, O_BK)
        if fused:
            _wait(sync, programs)
        if fused or STAGE == 2:  # attention: (row, head) pairs dealt round-robin
            pos = tl.load(pos_ptr).to(tl.int64)
            for unit in range(pid, M * H, programs):
                m = unit // H
                head = unit % H
                kv_head = head // (H // HKV)
                base = qkv_buf + m * n_qkv
                attend_one_query(
                    base + head * DH, base + n_attn + kv_head * DH, base + n_attn + (HKV + kv_head) * DH,
                    k_cache, v_cache, m * c_sb + kv_head * c_sh, pos, cos_ptr, sin_ptr,
                    attn_buf + m * n_attn + head * DH, c_ss, scale, head % (H // HKV) == 0,
                    DH, BLOCK_DH, BLOCK_S, ROPE, ".cg",
                )  # fmt: skip
        if fused:
            _arrive(sync)
        g_outs, g_valid = _gate_up_chunk(pid, GU_CHUNK, GU_BLOCK, HID)
        if fused or STAGE == 4:  # prefetch: the gate/up product's first chunk
            g_first = _weight_chunk(w13, g_outs, g_valid, 0, D, GU_BK)
        if fused:
            _wait(sync, 2 * programs)
        if fused or STAGE == 3:  # output projection + residual
            acc = _gemv(o_first, wo, o_outs, o_valid, attn_buf, wo, M, n_attn, BLOCK_M, O_BK, False, ".cg")
            h = _round(acc, h_buf) + _residual(x, o_outs, o_valid, M, D, BLOCK_M, "")
            _store_tile(h_buf, h, o_outs, o_valid, M, D, BLOCK_M)
        if fused:
            _arrive(sync)
        d_outs, d_valid = _chunk(pid, DN_CHUNK, DN_BLOCK, D)
        if fused or STAGE == 5:  # prefetch: the down projection's first chunk
            d_first = _weight_chunk(w2, d_outs, d_valid, 0, HID, DN_BK)
        if fused:
            _wait(sync, 3 * programs)
        if fused or STAGE == 4:  # norm + gate/up + SiLU-multiply
            acc = _gemv(g_first, w13, g_outs, g_valid, h_buf, mlp_norm, M, D, BLOCK_M, GU_BK, True, ".cg")
            acc *= _rstd(h_buf, M, D, eps_mlp, BLOCK_M, BLOCK_D, ".cg")[None, :]
            halves = tl.reshape(acc, (2, GU_BLOCK, BLOCK_M))
            which = tl.arange(0, 2)[:, None, None]
            gate = _round(tl.sum(tl.where(which == 0, halves, 0.0), axis=0), g_buf)
            up = _round(tl.sum(tl.where(which == 1, halves, 0.0), axis=0), g_buf)
            outs, valid = _chunk(pid, GU_CHUNK, GU_BLOCK, HID)
            _store_tile(g_buf, _round(gate * tl.sigmoid(gate), g_buf) * up, outs, valid, M, HID, BLOCK_M)
        if fused:
            _arrive(sync)
            _wait(sync, 4 * programs)
        if fused or STAGE == 5:  # down projection + residual
            acc = _gemv(d_first, w2, d_outs, d_valid, g_buf, w2, M, HID, BLOCK_M, DN_BK, False, ".cg")
            out = _round(acc, y) + _residual(h_buf, d_outs, d_valid, M, D, BLOCK_M, ".cg")
            _store_tile(y, out, d_outs, d_valid, M, D, BLOCK_M)
        if fused:
            _leave(sync)


# ---------------------------------------------------------------------------------------------- launch
def _programs(device: torch.device) -> int:
    """PROGRAMS_PER_SM programs per SM. All must be resident at once, which the grid barriers need: with at
    most 8 warps per SM in all (255 registers a thread at most, small shared memory) they always are."""
    if PROGRAMS_PER_SM * NUM_WARPS > 8:
        raise InputError(
            f"decode_layer: {PROGRAMS_PER_SM} programs of {NUM_WARPS} warps per SM may not all be resident; "
            "the grid barriers would never open"
        )
    return PROGRAMS_PER_SM * multiprocessors(device)


def _split(n: int, k: int, programs: int, tiles: int = 1) -> tuple[int, int, int]:
    """(outputs per program, its power-of-two tile, K step) for n outputs over `programs`: a chunk of
    `tiles` x tile rows and BLOCK_K columns holds about TILE_ELEMENTS weights."""
    chunk = -(-n // programs)
    block = triton.next_power_of_2(chunk)
    block_k = max(16, min(triton.next_power_of_2(k), TILE_ELEMENTS // (block * tiles)))
    return chunk, block, block_k


def _launch(
    x: Tensor,
    weights: tuple[Tensor, ...],
    k_cache: Tensor,
    v_cache: Tensor,
    input_pos: Tensor,
    cos: Tensor | None,
    sin: Tensor | None,
    sync: Tensor,
    eps: tuple[float, float],
    scale: float,
    n_heads: int,
    rope_layout: str,
    programs: int | None = None,
    stages: tuple[int, ...] = (0,),
) -> Tensor:
    """Launch the kernel on checked inputs: fused (stage 0, CUDA) or stage by stage (`stages` 1-5, the
    interpreter's way)."""
    attn_norm, wqkv, wo, mlp_norm, w13, w2 = (w.contiguous() for w in weights)
    batch, _, dim = x.shape
    if batch > MAX_ROWS:
        raise InputError(f"decode_layer: the kernel takes at most {MAX_ROWS} rows, got {batch}")
    if k_cache.stride(-1) != 1:
        raise InputError("decode_layer: the caches' head dimension must be contiguous")
    kv_heads, head_dim = k_cache.shape[1], k_cache.shape[3]
    hidden = w13.shape[0] // 2
    programs = programs or _programs(x.device)
    x2d = x.reshape(batch, dim).contiguous()
    new = x2d.new_empty
    buffers = (new(batch, wqkv.shape[0]), new(batch, n_heads * head_dim), new(batch, dim), new(batch, hidden))
    y = new(batch, dim)
    layout = 0 if cos is None else ROPE_LAYOUTS[rope_layout]
    cos = x2d if cos is None else cos.contiguous()
    sin = x2d if sin is None else sin.contiguous()
    qkv = _split(wqkv.shape[0], dim, programs)
    out = _split(dim, n_heads * head_dim, programs)
    gate_up = _split(hidden, dim, programs, tiles=2)
    down = _split(dim, hidden, programs)
    for stage in stages:
        launcher(_decode_layer_kernel)[(programs,)](
            x2d, y, attn_norm, wqkv, wo, mlp_norm, w13, w2, k_cache, v_cache, input_pos, cos, sin, *buffers,
            sync, batch, float(eps[0]), float(eps[1]), float(scale),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            D=dim, HID=hidden, H=n_heads, HKV=kv_heads, DH=head_dim,
            BLOCK_M=triton.next_power_of_2(batch), BLOCK_D=triton.next_power_of_2(dim),
            BLOCK_DH=triton.next_power_of_2(head_dim), BLOCK_S=cache_block(k_cache.shape[2]),
            QKV_CHUNK=qkv[0], QKV_BLOCK=qkv[1], QKV_BK=qkv[2], O_CHUNK=out[0], O_BLOCK=out[1], O_BK=out[2],
            GU_CHUNK=gate_up[0], GU_BLOCK=gate_up[1], GU_BK=gate_up[2],
            DN_CHUNK=down[0], DN_BLOCK=down[1], DN_BK=down[2],
            ROPE=layout, STAGE=stage, num_warps=NUM_WARPS, num_stages=1,
        )  # fmt: skip
    return y.view(batch, 1, dim)


@triton_op("genloom_core::decode_layer", mutates_args={"k_cache", "v_cache", "sync"})
def _decode_layer_op(
    x: Tensor,
    attn_norm: Tensor,
    wqkv: Tensor,
    wo: Tensor,
    mlp_norm: Tensor,
    w13: Tensor,
    w2: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    input_pos: Tensor,
    cos: Tensor | None,
    sin: Tensor | None,
    sync: Tensor,
    eps_attn: float,
    eps_mlp: float,
    scale: float,
    n_heads: int,
    rope_layout: str,
) -> Tensor:
    weights = (attn_norm, wqkv, wo, mlp_norm, w13, w2)
    eps = (eps_attn, eps_mlp)
    if triton is not None and x.is_cuda and x.shape[0] <= MAX_ROWS:
        return _launch(
            x, weights, k_cache, v_cache, input_pos, cos, sin, sync, eps, scale, n_heads, rope_layout
        )
    rope = None if cos is None else (cos, sin)
    return decode_layer_reference(
        x,
        weights,
        k_cache,
        v_cache,
        input_pos,
        rope,
        eps=eps,
        scale=scale,
        n_heads=n_heads,
        rope_layout=rope_layout,
    )


def decode_layer(
    x: Tensor,
    weights: tuple[Tensor, ...],
    k_cache: Tensor,
    v_cache: Tensor,
    input_pos: Tensor,
    rope: tuple[Tensor, Tensor] | None,
    sync: Tensor,
    *,
    eps: tuple[float, float],
    scale: float,
    n_heads: int,
    rope_layout: str = "interleaved",
    programs: int | None = None,
    staged: bool = False,
) -> Tensor:
    """One decode step x [B, 1, D] -> [B, 1, D] through a pre-norm layer (RMSNorm, fused qkv, causal
    attention on the static cache [B, Hkv, S, Dh] at slot `input_pos`, RoPE rows `rope` (cos, sin) [1, Dh/2]
    or None, fused SwiGLU, no biases), writing the step's keys and values into the caches. `weights`:
    `WEIGHT_ORDER`; `eps`: the two norms'; `sync`: int32 zeros, >= 2 (left zero). One Triton launch on
    CUDA for <= MAX_ROWS rows, the torch reference otherwise.

    `programs` (default: PROGRAMS_PER_SM per SM) or `staged` launch the kernel directly, not through the op:
    `staged` runs one launch per stage with no barrier (CUDA, or CPU tensors under TRITON_INTERPRET=1, how
    the CPU tests run the kernel)."""
    _check(x, weights, k_cache, v_cache, input_pos, rope, n_heads, rope_layout)
    cos, sin = (None, None) if rope is None else rope
    if staged or programs is not None:
        if triton is None:
            raise InputError("decode_layer: a direct launch (programs / staged) needs Triton")
        stages = (1, 2, 3, 4, 5) if staged else (0,)
        return _launch(
            x, weights, k_cache, v_cache, input_pos, cos, sin, sync, eps, scale, n_heads, rope_layout, programs,
            stages,
        )  # fmt: skip
    if triton is None or not x.is_cuda:  # the torch ops directly: no custom-op dispatch on the CPU
        return decode_layer_reference(
            x, weights, k_cache, v_cache, input_pos, rope, eps=eps, scale=scale, n_heads=n_heads,
            rope_layout=rope_layout,
        )  # fmt: skip
    return _decode_layer_op(
        x, *weights, k_cache, v_cache, input_pos, cos, sin, sync, float(eps[0]), float(eps[1]), float(scale),
        n_heads, rope_layout,
    )  # fmt: skip
