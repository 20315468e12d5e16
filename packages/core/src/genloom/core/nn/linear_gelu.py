"""`gelu(x @ W^T + b)` as one Triton GEMM with the bias and the GELU in its epilogue (inference on CUDA).

A GELU feed-forward layer's up-projection writes [rows, 4 x dim] activations that a separate GELU kernel reads
back and writes again: at batch 64 the DA-Transformer decoder's 33,792 x 2,048 activations cost ~100 us a
layer in the GELU kernel beside ~100 us of matrix product (H100, bf16), about a tenth of the pass. cuBLAS's
epilogues have only the tanh approximation of GELU, and these models use the exact one (erf); so the layer
needs its own GEMM to keep the activation in registers between the product and the GELU: `linear_gelu` is
that GEMM, a tiled `tl.dot` (wgmma on Hopper) with float32 accumulation whose epilogue adds the bias, applies
GELU (exact, or the tanh form for VAR / MDLM's "gelu_tanh") on the float32 sums and rounds once; the exact
form through a polynomial fit of erfc (`_normal_tail_gelu`), 3-4% faster than libdevice's erf in this GEMM
and free of float32's cancellation in the negative tail. (The tanh form takes cuBLASLt's product with its own GELU
epilogue instead, `cublas_gelu_tanh`, faster than this kernel: `TANH_BY_CUBLAS`.) It runs as a
persistent kernel (one program per SM striding over the output tiles) whose tiles arrive by TMA, with the
tile and K loops pipelined as one so that the next tile's loads overlap this tile's epilogue; a form with
pointer loads, one program per tile, stays for comparison (`GemmConfig.tma`). H100, bf16, against cuBLAS's
product + the GELU kernel (`benchmarks/linear_gelu.py`): MDLM's layer at batch 64 573 us against 858, MaskGIT's
197 / 234; DA-Transformer's and CMLM's decoders at batch 64 and a batch-1 translation about equal (225 / 223,
35 / 36, 10.5 / 10.7). The GEMM itself runs at about half of cuBLAS's rate at these shapes, so it pays only
where the GELU kernel was slow. The epilogue is not what holds it back (session 14: the cheaper GELU gained
3-4%, and neither Triton's warp specialization of the tile loop nor two programs per SM, the two ways to run
one tile's epilogue beside another's products, was faster in that sweep; both were removed).

The kernel serves bf16 / fp16 tensors on CUDA without autograd (sampling, translation, benchmarks);
training, float32 and the CPU take `F.gelu(F.linear(...))` (`linear_gelu_reference`). The op counts the
FLOPs torch counts for the linear (2 M N K), so FlopCounterMode sees the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from genloom.core.errors import InputError

from .triton_launch import multiprocessors

try:  # Triton ships with CUDA builds of torch; without it the reference runs on CUDA too
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

__all__ = ["GemmConfig", "gemm_config", "kernel_serves", "linear_gelu", "linear_gelu_reference"]

KERNEL_DTYPES = (torch.bfloat16, torch.float16)
APPROXIMATIONS = ("none", "tanh")
MIN_ROWS = 16_384  # the layer takes the kernel from this many rows (passes at batch 64; see kernel_serves)
TANH_BY_CUBLAS = True  # the tanh form as cuBLASLt's product with its GELU epilogue (`cublas_gelu_tanh`):
# on an H100 MDLM's batch-64 layer 517 us against 582 for the Triton kernel (session 14)
WIDE_TILE_OUTPUTS = 150_000_000  # outputs from which 128 x 256 tiles beat 128 x 128 (gemm_config)


@dataclass(frozen=True)
class GemmConfig:
    """A launch of the GEMM: output tile BLOCK_M x BLOCK_N, BLOCK_K inputs a step, GROUP_M row blocks swept
    per column block (L2 reuse of the weight tiles), warps and pipeline stages."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    tma: bool = False  # the persistent TMA form (Hopper), else one program per tile with pointer loads
    flatten: bool = True  # TMA form: the tile and K loops pipelined as one
    epilogue_subtile: bool = False  # TMA form: the epilogue stores the tile as two halves of BLOCK_N / 2


def gemm_config(m: int, n: int, k: int) -> GemmConfig:
    """The launch for [m, k] x [k, n], the fastest of H100 sweeps (`benchmarks/linear_gelu.py --sweep`, bf16,
    sessions 13-14): the persistent TMA form everywhere; 64 x 32 tiles for short
    inputs (a batch-1 sentence: 16-72 rows), 128 x 128 x 128 for the passes (DA-T / CMLM / MaskGIT at batch
    64), 128 x 256 x 64 with the tile stored in two halves once the output passes WIDE_TILE_OUTPUTS elements
    (MDLM at batch 64: 569 us against 633 for 128 x 128)."""
    if m <= 128:
        return GemmConfig(64, 32, 64, group_m=1, num_warps=4, num_stages=3, tma=True)
    if m * n >= WIDE_TILE_OUTPUTS:
        return GemmConfig(128, 256, 64, group_m=8, num_warps=8, num_stages=4, tma=True, epilogue_subtile=True)
    return GemmConfig(128, 128, 128, group_m=8, num_warps=8, num_stages=3, tma=True)


def linear_gelu_reference(
    x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str = "none"
) -> Tensor:
    """`F.gelu(F.linear(x, weight, bias), approximate=approximate)`: the modules' own computation."""
    return F.gelu(F.linear(x, weight, bias), approximate=approximate)


def kernel_serves(x: Tensor, weight: Tensor) -> bool:
    """Whether `linear_gelu` runs the Triton kernel for x and the weight (else the reference): Triton, CUDA,
    bf16 / fp16 alike, no autograd graph being recorded through them, rows of x, the weight and the output
    of 16-byte multiples (what TMA reads and writes), and at least MIN_ROWS rows: on an H100 the whole
    passes were faster with it from there (MaskGIT, DA-Transformer at batch 64), but CMLM's pass at 4,096 rows
    was 4% slower and a batch-1 translation's graph replayed in the same time either way."""
    return (
        triton is not None
        and x.is_cuda
        and x.dtype in KERNEL_DTYPES
        and weight.dtype == x.dtype
        and x.shape[-1] % 8 == 0
        and weight.shape[0] % 8 == 0
        and x.numel() >= MIN_ROWS * x.shape[-1]
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str) -> None:
    """Shape and option errors before any launch."""
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise InputError(
            f"linear_gelu: x must be [..., K] and weight [N, K] with the same K, got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise InputError(f"linear_gelu: bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    if approximate not in APPROXIMATIONS:
        raise InputError(f"linear_gelu: approximate must be one of {APPROXIMATIONS}, got {approximate!r}")


def linear_gelu(x: Tensor, weight: Tensor, bias: Tensor | None = None, approximate: str = "none") -> Tensor:
    """GELU of the linear map of x [..., K] by weight [N, K] (+ bias [N]) -> [..., N]: the Triton kernel where
    `kernel_serves`, else `linear_gelu_reference`. Mismatched shapes raise InputError."""
    _check(x, weight, bias, approximate)
    if not kernel_serves(x, weight) or (bias is not None and bias.dtype != x.dtype):
        return linear_gelu_reference(x, weight, bias, approximate)
    rows = x.reshape(-1, x.shape[-1])
    out = fused_linear_gelu(rows, weight, bias, approximate == "tanh")
    return out.reshape(*x.shape[:-1], weight.shape[0])


if triton is not None:

    @triton.jit
    def _product(a, w_rows, acc, IEEE: tl.constexpr):
        """acc [BLOCK_M, BLOCK_N] += a [BLOCK_M, BLOCK_K] @ w_rows [BLOCK_N, BLOCK_K]^T; float32 operands
        exactly (the interpreter's tests: no TF32)."""
        if IEEE:
            return tl.dot(a, tl.trans(w_rows), acc, input_precision="ieee")
        return tl.dot(a, tl.trans(w_rows), acc)

    @triton.jit
    def _normal_tail_gelu(v):
        """Exact GELU v Phi(v) through the normal tail Q(|v|) = erfc(z) / 2, z = |v| / sqrt(2), with erfc(z) =
        t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), P a degree-9 polynomial (the Chebyshev fit of Press et al.,
        Numerical Recipes' erfcc: relative error < 1.2e-7 for every z >= 0): one exp, one approximate
        reciprocal and ~12 FMAs, against libdevice's erf (~2x the instructions), where the epilogue is what
        the GEMM waits on. v Phi(v) = v (1 - Q) for v >= 0 and v Q below: no cancellation in the negative
        tail, where 0.5 v (1 + erf(v / sqrt(2))) in float32 loses its digits."""
        z = tl.abs(v) * 0.7071067811865476
        t = tl.math.fdiv(1.0, 1.0 + 0.5 * z)
        p = 0.17087277
        p = -0.82215223 + t * p
        p = 1.48851587 + t * p
        p = -1.13520398 + t * p
        p = 0.27886807 + t * p
        p = -0.18628806 + t * p
        p = 0.09678418 + t * p
        p = 0.37409196 + t * p
        p = 1.00002368 + t * p
        p = -1.26551223 + t * p
        tail = 0.5 * t * tl.exp(p - z * z)
        return v * tl.where(v >= 0.0, 1.0 - tail, tail)

    @triton.jit
    def _bias_gelu(acc, b, outs, HAS_BIAS: tl.constexpr, TANH: tl.constexpr):
        """The epilogue on the float32 sums: + bias[outs], then GELU, exact (the normal-tail polynomial) or
        the tanh form."""
        if HAS_BIAS:
            acc += tl.load(b + outs).to(tl.float32)[None, :]
        if TANH:  # 0.5 v (1 + tanh(u)) = v sigmoid(2u), u = sqrt(2 / pi) (v + 0.044715 v^3)
            inner = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)
            return acc * tl.sigmoid(2.0 * inner)
        return _normal_tail_gelu(acc)

    @triton.jit
    def _tile_of(tile, grid_m, grid_n, GROUP_M: tl.constexpr):
        """(row block, column block) of output tile `tile`: GROUP_M row blocks swept down each column block, so
        that tiles in flight together share weight tiles in L2."""
        per_group = GROUP_M * grid_n
        first_m = (tile // per_group) * GROUP_M
        group_rows = tl.minimum(grid_m - first_m, GROUP_M)
        return first_m + (tile % per_group) % group_rows, (tile % per_group) // group_rows

    @triton.jit
    def _linear_gelu_tma_kernel(
        x_desc, w_desc, b, y_desc,
        M, N, K,
        HAS_BIAS: tl.constexpr, TANH: tl.constexpr, IEEE: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
        STAGES: tl.constexpr, PROGRAMS: tl.constexpr, FLATTEN: tl.constexpr, SUBTILE: tl.constexpr,
    ):  # fmt: skip
        """Persistent form (Hopper): PROGRAMS programs stride over the output tiles; x and w tiles arrive by
        TMA (tensor descriptors: out-of-range rows / columns / K read as zeros, stores clipped), and with
        FLATTEN the tile and K loops are pipelined as one, so the next tile's loads overlap this one's
        epilogue. SUBTILE stores the tile as two [BLOCK_M, BLOCK_N / 2] halves (y_desc's block is the half)."""
        grid_m = tl.cdiv(M, BLOCK_M)
        grid_n = tl.cdiv(N, BLOCK_N)
        k_steps = tl.cdiv(K, BLOCK_K)
        for tile in tl.range(tl.program_id(0), grid_m * grid_n, PROGRAMS, flatten=FLATTEN, num_stages=STAGES):
            pid_m, pid_n = _tile_of(tile, grid_m, grid_n, GROUP_M)
            acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for step in range(k_steps):
                a = x_desc.load([pid_m * BLOCK_M, step * BLOCK_K])
                w_rows = w_desc.load([pid_n * BLOCK_N, step * BLOCK_K])
                acc = _product(a, w_rows, acc, IEEE)
            outs = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            acc = _bias_gelu(acc, b, outs % N, HAS_BIAS, TANH)
            if SUBTILE:  # [BLOCK_M, BLOCK_N] -> the halves [:, :BLOCK_N / 2] and [:, BLOCK_N / 2:]
                left, right = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
                y_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N], left.to(y_desc.dtype))
                y_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N + BLOCK_N // 2], right.to(y_desc.dtype))
            else:
                y_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N], acc.to(y_desc.dtype))

    @triton.jit
    def _linear_gelu_kernel(
        x, w, b, y,
        M, N, K,
        stride_xm, stride_wn, stride_ym,
        HAS_BIAS: tl.constexpr, TANH: tl.constexpr, IEEE: tl.constexpr, EVEN_K: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
        STAGES: tl.constexpr,
    ):  # fmt: skip
        """One program: the [BLOCK_M, BLOCK_N] output tile of y = gelu(x @ w^T + b), float32 accumulation.
        Programs sweep GROUP_M row blocks down each column block so that concurrent programs share weight
        tiles in L2; out-of-range rows / columns are read at a clamped index and never stored."""
        pid_m, pid_n = _tile_of(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        outs = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rows_read = rows % M
        outs_read = outs % N
        steps = tl.arange(0, BLOCK_K)
        x_tile = x + rows_read[:, None] * stride_xm + steps[None, :]  # [BLOCK_M, BLOCK_K]
        w_tile = w + outs_read[:, None] * stride_wn + steps[None, :]  # [BLOCK_N, BLOCK_K], rows of w
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in tl.range(0, K, BLOCK_K, num_stages=STAGES):
            if EVEN_K:
                a = tl.load(x_tile)
                bt = tl.load(w_tile)
            else:
                inside = start + steps < K
                a = tl.load(x_tile, mask=inside[None, :], other=0.0)
                bt = tl.load(w_tile, mask=inside[None, :], other=0.0)
            acc = _product(a, bt, acc, IEEE)
            x_tile += BLOCK_K
            w_tile += BLOCK_K
        acc = _bias_gelu(acc, b, outs_read, HAS_BIAS, TANH)
        tl.store(
            y + rows[:, None] * stride_ym + outs[None, :],
            acc.to(y.dtype.element_ty),
            mask=(rows < M)[:, None] & (outs < N)[None, :],
        )


def linear_gelu_triton(
    x: Tensor, weight: Tensor, bias: Tensor | None, tanh: bool, config: GemmConfig | None = None
) -> Tensor:
    """The kernel's launch (CUDA, or CPU under TRITON_INTERPRET=1): x [M, K], weight [N, K] -> [M, N] in x's
    dtype; `config` overrides `gemm_config`'s (the benchmark's sweep). Rows that TMA cannot address (not
    16-byte multiples; `kernel_serves` keeps them off CUDA) take the pointer form."""
    x, weight = (_aligned_rows(t) for t in (x, weight))
    (m, k), n = x.shape, weight.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    if k == 0:
        return linear_gelu_reference(x, weight, bias, "tanh" if tanh else "none")
    config = config or gemm_config(m, n, k)
    tiles = triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n)
    if config.tma and (n * x.element_size()) % 16 == 0 and (k * x.element_size()) % 16 == 0:
        return _launch_tma(x, weight, bias, tanh, config, out, tiles)
    _linear_gelu_kernel[(tiles,)](
        x, weight, weight if bias is None else bias, out,
        m, n, k,
        x.stride(0), weight.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, TANH=tanh, IEEE=x.dtype == torch.float32, EVEN_K=k % config.block_k == 0,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m,
        STAGES=config.num_stages, num_warps=config.num_warps,
    )  # fmt: skip
    return out


def _aligned_rows(t: Tensor) -> Tensor:
    """t itself if its rows are contiguous and start on 16 bytes (TMA's rule), else a fresh copy."""
    row_bytes = t.stride(0) * t.element_size()
    if t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and (t.shape[0] == 1 or row_bytes % 16 == 0):
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _launch_tma(
    x: Tensor, weight: Tensor, bias: Tensor | None, tanh: bool, config: GemmConfig, out: Tensor, tiles: int
) -> Tensor:
    """The persistent TMA form: one program per SM at most (the device's count; 4 under the interpreter)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    sms = multiprocessors(x.device) if x.is_cuda else 4
    programs = min(sms, tiles)
    (m, k), n = x.shape, weight.shape[0]
    store_n = config.block_n // 2 if config.epilogue_subtile else config.block_n
    _linear_gelu_tma_kernel[(programs,)](
        TensorDescriptor.from_tensor(x, [config.block_m, config.block_k]),
        TensorDescriptor.from_tensor(weight, [config.block_n, config.block_k]),
        weight if bias is None else bias,
        TensorDescriptor.from_tensor(out, [config.block_m, store_n]),
        m, n, k,
        HAS_BIAS=bias is not None, TANH=tanh, IEEE=x.dtype == torch.float32,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m,
        STAGES=config.num_stages, PROGRAMS=programs, FLATTEN=config.flatten, SUBTILE=config.epilogue_subtile,
        num_warps=config.num_warps,
    )  # fmt: skip
    return out


def cublas_gelu_tanh(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """gelu_tanh(x @ weight^T + bias) as one cuBLASLt call on CUDA: `torch._addmm_activation(...,
    use_gelu=True)` runs the product with cuBLASLt's GELU epilogue, which is the tanh approximation (exactly
    VAR's and MDLM's "gelu_tanh"; the exact GELU has no cuBLAS epilogue). Off CUDA that op applies the exact
    GELU, so the CPU takes the reference's tanh form."""
    if not x.is_cuda:
        return linear_gelu_reference(x, weight, bias, "tanh")
    bias = bias if bias is not None else x.new_zeros(weight.shape[0])
    return torch._addmm_activation(bias, x, weight.t(), use_gelu=True)


@torch.library.custom_op("genloom::linear_gelu", mutates_args=())
def fused_linear_gelu(x: Tensor, weight: Tensor, bias: Tensor | None, tanh: bool) -> Tensor:
    """x [M, K], weight [N, K], bias [N] or None -> gelu(x @ weight^T + bias) [M, N] (an op torch.compile
    keeps whole and a CUDA graph captures)."""
    return linear_gelu_reference(x, weight, bias, "tanh" if tanh else "none")


@fused_linear_gelu.register_kernel("cuda")
def _fused_linear_gelu_cuda(x: Tensor, weight: Tensor, bias: Tensor | None, tanh: bool) -> Tensor:
    if tanh and TANH_BY_CUBLAS:
        return cublas_gelu_tanh(x, weight, bias)
    return linear_gelu_triton(x, weight, bias, tanh)


@fused_linear_gelu.register_fake
def _fused_linear_gelu_fake(x: Tensor, weight: Tensor, bias: Tensor | None, tanh: bool) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


@register_flop_formula(torch.ops.genloom.linear_gelu)
def _linear_gelu_flops(x_shape, w_shape, *args, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    """What FlopCounterMode counts for the linear: 2 M N K (the bias and the GELU are not counted)."""
    return 2 * x_shape[0] * w_shape[0] * x_shape[1]
