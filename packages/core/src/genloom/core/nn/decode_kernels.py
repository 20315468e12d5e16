"""Weight products of a few rows (decode steps) with their neighbouring pointwise work fused in: Triton kernels.

Why: a compiled LlamaGen-B decode step (12 layers, dim 768, batch 1 with CFG = 2 rows, bf16, one CUDA graph)
took 443 us on an H100 against a weight-bandwidth floor of ~75 us. Its ~13 kernels per layer were cuBLAS
GEMVs of ~4.4 us each whatever their size (48 per step, 217 us) and ~60 pointwise / norm kernels of 1-1.5 us
(docs/benchmarks.md, "Where a decode step's time goes"). A [2304, 768] bf16 weight is 3.5 MB, ~1.2 us at
3 TB/s: the products are bound by launches and latency, not bytes. Here one kernel does what a layer's
pre-norm block spends two or three on:

- `rms_norm_linear(x, norm_weight, eps, weight, bias=None)`: `RMSNorm(x) * norm_weight @ weight.T (+ bias)`
  (attention's fused qkv projection with its input norm; the vocab head with the final norm);
- `linear_residual(x, weight, residual, bias=None)`: `residual + x @ weight.T` (attention's output
  projection and the MLP's down projection with the residual add in the epilogue);
- `rms_norm_swiglu(x, norm_weight, eps, gate_up_weight)`: `silu(xn @ W1.T) * (xn @ W3.T)` with the gate and
  up weights as one [2H, K] matrix, rows [W1; W3] (`MLP.fuse_gate`'s `w13`).

First H100 measurement of the default configs (LlamaGen-B step, 2 rows, bf16, CUDA graph,
benchmarks/decode_step_profile.py): the 49 fused kernels of a step took 339 us against 273 us for the 61
cuBLAS GEMVs of the same weights (`matmuls_only`), ~6.9 us per kernel where cuBLAS takes ~4.5 us per GEMV
whatever its size (2-7 MB: 0.8-1.6 TB/s of the H100's ~3.3 TB/s); the whole step 495 us fused against 441 us
with cuBLAS. `KernelConfig` therefore selects among kernel forms, which benchmarks/decode_kernel_sweep.py
times per shape against the same product compiled from torch ops (H100, 2 rows, weights rotated out of L2):
the best configs took 0.58-0.70x the compiled products' time for the four block products and 0.88x for the
head, and with the sweep's configs (`kernel_config`) `Block` runs them for decode calls of <= 4 rows on CUDA:
the whole step 446 -> 355 us together with `decode_attention` (docs/benchmarks.md, session 9).

Kernel forms (all share the fused prologue / epilogue; `KernelConfig` picks one):

- dot (`dot=True`, any M <= 16): x [M, K] is the right operand of a `tl.dot` padded to 16 columns
  (W [BLOCK_N, BLOCK_K] @ x.T [BLOCK_K, 16]: "swap AB", so the weight rows fill the MMA's 16-row side and the
  few activation rows only pad its narrow side; masked rows cost no memory traffic);
- no-dot GEMV (`dot=False`, M <= 4): each K step loads the weight tile [BLOCK_N, BLOCK_K] once and, per row
  (a static loop over M_PAD = 1 / 2 / 4 rows, M rounded up to a power of two), multiplies it by that row's
  x chunk broadcast and sums over K into a float32 accumulator: CUDA-core FMAs, no padding to 16 rows, no
  shared-memory staging for an MMA, and blocks of fewer than 16 outputs (more programs) are allowed;
- split-K (`split_k` > 1, either form): programs (n-block, k-split) each cover a contiguous, BLOCK_K-aligned
  range of K, so a product of 768 outputs can run 48 x 4 programs instead of 48. See "Split-K" below.

Each program owns BLOCK_N output features for all rows and loops over its K range in BLOCK_K steps that
Triton pipelines (`num_stages`), with 16-byte weight loads. The norm costs no kernel of its own: every
program re-reads x (M x K, a few kB, from L2) and sums its squares in the same loop, and since
`RMSNorm(x) * g @ W.T = rsqrt(mean(x^2) + eps) * ((x * g) @ W.T)` per row, the scale is applied to the
accumulator at the end (one pass over K). In float32 this is the module's result to rounding; in bf16 the
dot's operand is `bf16(x * g)` instead of `bf16(bf16(x * rstd) * g)` (the no-dot form keeps `x * g` in
float32), a rounding-order difference (bf16 tolerance). Products are rounded to the input dtype before the
residual add / SiLU as the eager modules do.

Split-K: the epilogue (norm scaling, bias, residual add, SiLU-multiply, cast) must run once per output after
every split's partial is in. Of the two ways, a second reduction kernel or the last-arriving program of each
n-block, this uses the second: a second launch costs ~1-2 us in a CUDA graph, most of what split-K could
save at a 2.5-3 us target, while the last-arrival pattern is a few lines. Each program stores its float32
partial products [BLOCK_N, BLOCK_M] (and, for the norm, its sums of squares over its K range) to a workspace
slot of its own, then `tl.debug_barrier()` (every thread's stores issued) and one acq_rel atomic increment of
its n-block's int32 counter at GPU scope (the release publishes the stores, as CUTLASS's semaphore does);
the program that sees the count SPLIT_K - 1 arrived last: it reads the SPLIT_K partials back (`.cg`, from L2,
past the non-coherent L1) and adds them in split order 0, 1, ..., so the result does not depend on which
program came last (deterministic), sums the squares of all splits (the whole K), runs the epilogue and sets
the counter back to 0. The counters are one int32 buffer per device, zeroed once and left zero by every
launch, so a call needs no memset kernel (and replays in a CUDA graph); in exchange two split-K launches must
not run at once on two streams of one device, and the first split-K call on a device (which allocates the
buffer) must run outside CUDA graph capture, as the first call of any config must anyway (it compiles).

Configs come from `kernel_config` (a rule by N, K, the element size and M: the no-dot form for <= 4 rows
and 128-1,024 blocks of 8 outputs, else the dot form; split-K only where the caller hands the op its
arrival counters as an argument, which torch.compile traces as a mutated input: `linear_residual(...,
counters=KVCache.sync)`; the device-wide buffer above, module state, could not be traced), never from
`triton.autotune`, which benchmarks configs at its first call: impossible inside
CUDA graph capture. Any other `KernelConfig` can be passed to the `*_triton` functions.

Every op is a `torch.library.triton_op` (`genloom_core::rms_norm_linear`, ...): torch.compile traces into it
and sees the kernel launch (no graph break; a CUDA graph captures it). The Triton path serves CUDA tensors of
at most `MAX_ROWS` rows in bf16 / fp16 / fp32; otherwise (CPU, no Triton, more rows) the op runs the pure
torch `*_reference` function, which is also what the tests compare against. `*_triton` launch the kernel
directly (CUDA, or CPU tensors under TRITON_INTERPRET=1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.library import triton_op

from genloom.core.errors import InputError

from .triton_launch import launcher

try:  # Triton ships with CUDA builds of torch; without it every op runs its torch reference
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

__all__ = [
    "MAX_ROWS",
    "NO_DOT_MAX_ROWS",
    "KernelConfig",
    "kernel_config",
    "linear_residual",
    "linear_residual_reference",
    "linear_residual_triton",
    "rms_norm_linear",
    "rms_norm_linear_reference",
    "rms_norm_linear_triton",
    "rms_norm_swiglu",
    "rms_norm_swiglu_reference",
    "rms_norm_swiglu_triton",
]

MAX_ROWS = 16  # rows (M) the kernels take: the dot's padded side
NO_DOT_MAX_ROWS = 4  # rows the no-dot form takes (a static loop over them per K step)
NO_DOT_BLOCK_N, NO_DOT_BLOCK_K = 8, 256  # kernel_config's no-dot tile (the H100 sweep's best at 2 rows)
NO_DOT_MAX_PROGRAMS = 1024  # above this many blocks of 8 outputs (a vocabulary head) the dot form won
SUPPORTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
TARGET_PROGRAMS = 128  # about one program per SM of an H100 (132 SMs)
SPLIT_MAX_BLOCKS = (
    4 * TARGET_PROGRAMS
)  # split-K below this many blocks of 8 outputs (LlamaGen-B / XL residuals)
MAX_STEP_BYTES = 48 * 1024  # bytes a program stages per K step (weight tiles + x padded to 16 rows); the
# pipeline holds num_stages - 1 steps in shared memory: <= 144 kB of an H100 SM's 227 kB
BLOCK_K_CHOICES = (512, 256, 128, 64, 32, 16)
COUNTER_SLOTS = 8192  # split-K arrival counters per device: n-blocks of one launch (16,384 outputs / 2)


# ---------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class KernelConfig:
    """Launch parameters: `block_n` output features per program (per half for SwiGLU), `block_k` input
    features per loop step, warps and pipeline stages; `split_k` programs share each n-block's K range (1:
    none), and `dot` picks the form: a `tl.dot` with the rows padded to 16 (block_n, block_k >= 16) or the
    no-dot GEMV of at most NO_DOT_MAX_ROWS rows (block_n >= 1, block_k >= 16). Sizes are powers of two."""

    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3
    split_k: int = 1
    dot: bool = True

    def __post_init__(self) -> None:
        powers = {"block_n": self.block_n, "block_k": self.block_k, "num_warps": self.num_warps}
        for name, value in powers.items():
            if value < 1 or value & (value - 1):
                raise InputError(f"KernelConfig.{name} must be a power of two, got {value}")
        least = 16 if self.dot else 1
        if self.block_n < least or self.block_k < 16:
            raise InputError(
                f"KernelConfig: the {'dot' if self.dot else 'no-dot'} form needs block_n >= {least} and "
                f"block_k >= 16, got {self.block_n} and {self.block_k}"
            )
        if self.num_stages < 1 or self.split_k < 1:
            raise InputError(f"KernelConfig: num_stages and split_k must be >= 1, got {self}")


def kernel_config(
    n: int, k: int, element_size: int, *, weight_blocks: int = 1, rows: int = MAX_ROWS, split: bool = False
) -> KernelConfig:
    """The config for a product with `n` outputs (per weight block), `k` inputs and `rows` rows of x.

    Up to NO_DOT_MAX_ROWS rows and between TARGET_PROGRAMS and NO_DOT_MAX_PROGRAMS blocks of 8 outputs (what
    the H100 sweep measured, `benchmarks/decode_kernel_sweep.py`, LlamaGen-B at 2 rows, weights not in L2:
    the qkv and gate/up products at 0.70x / 0.61x the compiled torch product): the no-dot form, 8 outputs and
    256 inputs a step per program, 8 warps, 1 stage. Everything else takes the dot form below (in the same
    sweep 0.71x for the 768 x 768 output projection, 0.73x for the 768 x 2048 down projection, 0.88x for a
    16,384-word head with 2 stages). With `split` (the caller holds arrival counters, `linear_residual`'s
    `counters`), a product of fewer than SPLIT_MAX_BLOCKS blocks of 8 outputs over at least two K steps takes
    the no-dot form with K split into the largest power of two <= its steps (LlamaGen-B's 768-output
    products: 2 over K = 768, 8 over K = 2048, the sweep's best at 3.69 / 4.39 us against 3.95 / 5.51;
    LlamaGen-XL's 1,280-output products: 4 over K = 1,280, 8 over K = 3,584, 4.57 / ~6.7 us in the session-13
    sweep, against 8.20 / 10.53 for the compiled torch products).

    block_n: the largest of 64 / 32 / 16 that still gives TARGET_PROGRAMS programs (LlamaGen-B: 16 for the
    2304 qkv and the 2 x 2048 gate/up outputs, 144 and 128 programs; 16 for the 768-output products, only 48
    programs; 64 for a 16,384-word head, 256 programs). block_k: the largest power of two <= 512 that divides
    k (no masks on the K axis) within MAX_STEP_BYTES per step of `weight_blocks` weight tiles and the x tile
    (768 -> 256, 2048 -> 512 in bf16), else the next power of two above k, capped, with masked loads. Four pipeline
    stages instead of three where there are fewer than TARGET_PROGRAMS programs (two for a few rows and many
    programs: the sweep's best head config)."""
    blocks = _cdiv(n, NO_DOT_BLOCK_N)
    steps = _cdiv(k, NO_DOT_BLOCK_K)
    if split and rows <= NO_DOT_MAX_ROWS and weight_blocks == 1 and blocks < SPLIT_MAX_BLOCKS and steps >= 2:
        # few outputs (LlamaGen-B's 768, XL's 1,280-output products): the no-dot form with K split over more
        # programs, one split per K step up to a power of two (the sweeps' best: B split 2 over K = 768, 8 over
        # 2,048; XL 4-8 over K = 1,280 and 8 over 3,584)
        return KernelConfig(NO_DOT_BLOCK_N, NO_DOT_BLOCK_K, num_warps=8, num_stages=1,
                            split_k=1 << (steps.bit_length() - 1), dot=False)  # fmt: skip
    if rows <= NO_DOT_MAX_ROWS and TARGET_PROGRAMS <= blocks <= NO_DOT_MAX_PROGRAMS:
        block_k = min(NO_DOT_BLOCK_K, max(16, 1 << (k - 1).bit_length()))
        return KernelConfig(NO_DOT_BLOCK_N, block_k, num_warps=8, num_stages=1, dot=False)
    block_n = 64
    while block_n > 16 and _cdiv(n, block_n) < TARGET_PROGRAMS:
        block_n //= 2
    rows_staged = block_n * weight_blocks + MAX_ROWS
    fits = [b for b in BLOCK_K_CHOICES if rows_staged * b * element_size <= MAX_STEP_BYTES]
    dividing = [b for b in fits if k % b == 0]
    if dividing:
        block_k = dividing[0]
    else:
        block_k = min(max(16, 1 << (k - 1).bit_length()), fits[0] if fits else 16)
    few_programs = _cdiv(n, block_n) < TARGET_PROGRAMS
    stages = 4 if few_programs else 2 if rows <= NO_DOT_MAX_ROWS else 3
    return KernelConfig(block_n=block_n, block_k=block_k, num_stages=stages)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------------------------------------- references
def rms_norm_reference(x: Tensor, norm_weight: Tensor, eps: float) -> Tensor:
    """`RMSNorm` (norms.py): statistics in float32, eps inside the root, cast back, then the weight."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * norm_weight


def rms_norm_linear_reference(
    x: Tensor, norm_weight: Tensor, eps: float, weight: Tensor, bias: Tensor | None = None
) -> Tensor:
    """`F.linear(RMSNorm(x), weight, bias)` as the eager modules compute it."""
    return F.linear(rms_norm_reference(x, norm_weight, eps), weight, bias)


def linear_residual_reference(
    x: Tensor, weight: Tensor, residual: Tensor, bias: Tensor | None = None
) -> Tensor:
    """`residual + F.linear(x, weight, bias)`."""
    return residual + F.linear(x, weight, bias)


def rms_norm_swiglu_reference(x: Tensor, norm_weight: Tensor, eps: float, gate_up_weight: Tensor) -> Tensor:
    """`silu(gate) * up` of `F.linear(RMSNorm(x), gate_up_weight).chunk(2)` (the fused SwiGLU MLP's input)."""
    gate, up = F.linear(rms_norm_reference(x, norm_weight, eps), gate_up_weight).chunk(2, dim=-1)
    return F.silu(gate) * up


# ---------------------------------------------------------------------------------------------- checks
def _check_product(name: str, x: Tensor, weight: Tensor, **others: Tensor | None) -> None:
    """Shapes and dtypes every op needs: weight [N, K] with x [..., K], one floating dtype for all."""
    if weight.dim() != 2:
        raise InputError(f"{name}: the weight must be [N, K] (nn.Linear layout), got {tuple(weight.shape)}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise InputError(
            f"{name}: x [..., K] has K = {x.shape[-1] if x.dim() else None} but the weight "
            f"{tuple(weight.shape)} expects K = {weight.shape[1]}"
        )
    if x.dtype not in SUPPORTED_DTYPES:
        raise InputError(f"{name}: x must be bfloat16, float16 or float32, got {x.dtype}")
    for label, tensor in {"weight": weight, **others}.items():
        if tensor is not None and tensor.dtype != x.dtype:
            raise InputError(f"{name}: {label} is {tensor.dtype} but x is {x.dtype}; give all one dtype")


def _check_vector(name: str, label: str, tensor: Tensor | None, size: int) -> None:
    if tensor is not None and tuple(tensor.shape) != (size,):
        raise InputError(f"{name}: {label} must be [{size}], got {tuple(tensor.shape)}")


def _check_rms_norm_linear(x: Tensor, norm_weight: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    _check_product("rms_norm_linear", x, weight, norm_weight=norm_weight, bias=bias)
    _check_vector("rms_norm_linear", "norm_weight", norm_weight, weight.shape[1])
    _check_vector("rms_norm_linear", "bias", bias, weight.shape[0])


def _check_linear_residual(x: Tensor, weight: Tensor, residual: Tensor, bias: Tensor | None) -> None:
    _check_product("linear_residual", x, weight, residual=residual, bias=bias)
    _check_vector("linear_residual", "bias", bias, weight.shape[0])
    expected = (*x.shape[:-1], weight.shape[0])
    if tuple(residual.shape) != expected:
        raise InputError(f"linear_residual: residual must be {expected}, got {tuple(residual.shape)}")


def _check_rms_norm_swiglu(x: Tensor, norm_weight: Tensor, gate_up_weight: Tensor) -> None:
    _check_product("rms_norm_swiglu", x, gate_up_weight, norm_weight=norm_weight)
    _check_vector("rms_norm_swiglu", "norm_weight", norm_weight, gate_up_weight.shape[1])
    if gate_up_weight.shape[0] % 2:
        raise InputError(
            f"rms_norm_swiglu: gate_up_weight must stack [W1; W3] (an even row count), got "
            f"{tuple(gate_up_weight.shape)}"
        )


def _rows(name: str, x: Tensor) -> Tensor:
    """x [..., K] -> [M, K] with unit stride along K; M <= MAX_ROWS (the Triton path's limit)."""
    x2d = x.reshape(-1, x.shape[-1])
    if x2d.shape[0] > MAX_ROWS:
        raise InputError(
            f"{name}: the Triton kernel takes at most {MAX_ROWS} rows, got {x2d.shape[0]} "
            f"(x {tuple(x.shape)}); call {name}() instead, which falls back to torch for more rows"
        )
    return x2d if x2d.stride(-1) == 1 else x2d.contiguous()


def _unit_stride(weight: Tensor) -> Tensor:
    return weight if weight.stride(-1) == 1 else weight.contiguous()


def _prepared(
    name: str, x: Tensor, weight: Tensor, config: KernelConfig | None, *, weight_blocks: int = 1,
    split: bool = False,
) -> tuple[Tensor, Tensor, tuple[int, int, int], KernelConfig, Tensor]:  # fmt: skip
    """A launch's operands: x as [M, K] rows, the weight with unit stride, (M, K, N outputs per weight block),
    the config (`kernel_config`'s unless given; `split`: split-K allowed) and the uninitialised output [M, N]."""
    x2d, weight = _rows(name, x), _unit_stride(weight)
    (rows, k), n = x2d.shape, weight.shape[0] // weight_blocks
    config = config or kernel_config(
        n, k, x.element_size(), weight_blocks=weight_blocks, rows=rows, split=split
    )
    return x2d, weight, (rows, k, n), config, x2d.new_empty((rows, n))


def _triton_serves(x: Tensor) -> bool:
    rows = x.numel() // max(x.shape[-1], 1)
    return triton is not None and x.is_cuda and 0 < rows <= MAX_ROWS


def _block_m(config: KernelConfig, name: str, rows: int) -> int:
    """The rows' side of a program's tile: 16 for the dot, the rows rounded up to a power of two (1 / 2 /
    4) for the no-dot form."""
    if config.dot:
        return MAX_ROWS
    if rows > NO_DOT_MAX_ROWS:
        raise InputError(
            f"{name}: the no-dot form (KernelConfig(dot=False)) takes at most {NO_DOT_MAX_ROWS} rows, got "
            f"{rows}; use the dot form"
        )
    return 1 << (rows - 1).bit_length()


_COUNTERS: dict[torch.device, Tensor] = {}


def _split_k_buffers(
    config: KernelConfig, x: Tensor, grid_n: int, block_m: int, parts: int, counters: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(workspace, counters) of a launch: `parts` float32 tiles [BLOCK_N, BLOCK_M] (products; sums of
    squares for a norm) per (split, n-block), uninitialised; the device's int32 arrival counters, which every
    launch leaves zero (kept for the process: a captured CUDA graph holds their address)."""
    if grid_n > COUNTER_SLOTS:
        raise InputError(f"split-K takes at most {COUNTER_SLOTS} blocks of outputs, got {grid_n}")
    if counters is not None:  # the caller's zeroed counters (an op argument, which torch.compile traces)
        if counters.numel() < grid_n or counters.dtype != torch.int32:
            raise InputError(
                f"split-K needs int32 counters for {grid_n} blocks, got {counters.dtype} {tuple(counters.shape)}"
            )
    else:
        counters = _COUNTERS.get(x.device)
    if counters is None:
        counters = _COUNTERS.setdefault(
            x.device, torch.zeros(COUNTER_SLOTS, dtype=torch.int32, device=x.device)
        )
    slot = parts * config.block_n * block_m
    workspace = torch.empty(config.split_k * grid_n * slot, dtype=torch.float32, device=x.device)
    return workspace, counters


def _launch(
    kernel: object,
    name: str,
    config: KernelConfig,
    x2d: Tensor,
    n: int,
    parts: int,
    args: tuple,
    counters: Tensor | None = None,
    **constexprs: object,
) -> None:
    """Launch `kernel` over (n-blocks, splits) with `args` (the kernel's arguments before its workspace and
    counters) and the config's constexprs; split-K counts arrivals in `counters` (else the device's)."""
    (rows, k), grid_n = x2d.shape, triton.cdiv(n, config.block_n)
    block_m = _block_m(config, name, rows)
    if config.split_k > 1:
        workspace, counters = _split_k_buffers(config, x2d, grid_n, block_m, parts, counters)
    else:  # unused (the split-K code is compiled out); any pointers
        workspace, counters = x2d, x2d
    launcher(kernel)[(grid_n, config.split_k)](
        *args,
        workspace,
        counters,
        **constexprs,
        BLOCK_M=block_m,
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        EVEN_K=k % config.block_k == 0,
        IEEE=x2d.dtype == torch.float32,
        DOT=config.dot,
        SPLIT_K=config.split_k,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )


# ---------------------------------------------------------------------------------------------- kernels
if triton is not None:

    @triton.jit
    def _k_range(K, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
        """This program's [start, end) of K: all of it, or split `program_id(1)`'s share, a whole number of
        BLOCK_K steps (the last splits may get fewer steps, or none)."""
        if SPLIT_K == 1:
            start = 0
            end = K
        else:
            share = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
            start = tl.program_id(1) * share
            end = tl.minimum(start + share, K)
        return start, end

    @triton.jit
    def _x_operand(x, norm_weight, rows, cols, M, K, stride_xm, NORM: tl.constexpr, EVEN_K: tl.constexpr):
        """Columns `cols` of x as the dot's right operand [BLOCK_K, BLOCK_M] in x's dtype (times the norm
        weight when NORM) and the float32 sums of their squares per row [BLOCK_M]."""
        pointers = x + rows[None, :] * stride_xm + cols[:, None]
        inside = rows[None, :] < M
        if not EVEN_K:
            inside = inside & (cols[:, None] < K)
        chunk = tl.load(pointers, mask=inside, other=0.0).to(tl.float32)
        squares = tl.sum(chunk * chunk, axis=0)
        if NORM:
            scale = tl.load(norm_weight + cols, mask=cols < K, other=0.0).to(tl.float32)
            chunk = chunk * scale[:, None]
        return chunk.to(x.dtype.element_ty), squares

    @triton.jit
    def _x_row(x, m: tl.constexpr, outs, cols, M, K, stride_xm):
        """Row m of x at columns `cols` in float32, repeated over the weight tile's BLOCK_N rows [BLOCK_N,
        BLOCK_K] (zeros past K and for a padding row m >= M). Tile-shaped so that it takes the weight tile's
        register layout: no layout conversion (a shared-memory round trip with barriers) per row and step;
        the repeated addresses are the same few cache lines."""
        pointers = x + m * stride_xm + cols[None, :] + 0 * outs[:, None]
        inside = (cols[None, :] < K) & (m < M)
        return tl.load(pointers, mask=inside, other=0.0).to(tl.float32)

    @triton.jit
    def _add_to_column(acc, values, rows, m: tl.constexpr):
        """acc[:, m] += values: acc [BLOCK_N, BLOCK_M], values [BLOCK_N] (the no-dot form's row m)."""
        return tl.where(rows[None, :] == m, acc + values[:, None], acc)

    @triton.jit
    def _weight_tile(w, outs, cols, N, K, stride_wn, EVEN_K: tl.constexpr):
        """Weight rows `outs` [BLOCK_N] at columns `cols` [BLOCK_K], zeros outside; read once, so evict
        first (x and the residual stay in L2)."""
        pointers = w + outs.to(tl.int64)[:, None] * stride_wn + cols[None, :]
        inside = outs[:, None] < N
        if not EVEN_K:
            inside = inside & (cols[None, :] < K)
        return tl.load(pointers, mask=inside, other=0.0, eviction_policy="evict_first")

    @triton.jit
    def _product(w_tile, x_tile, acc, IEEE: tl.constexpr):
        """acc [BLOCK_N, BLOCK_M] += w_tile @ x_tile; float32 operands exactly (no TF32)."""
        if IEEE:
            acc = tl.dot(w_tile, x_tile, acc, input_precision="ieee")
        else:
            acc = tl.dot(w_tile, x_tile, acc)
        return acc

    @triton.jit
    def _slot(workspace, split, part: tl.constexpr, PARTS: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_M: tl.constexpr):  # fmt: skip
        """Where partial `part` of (split, this n-block) starts in the workspace: PARTS tiles of [BLOCK_N,
        BLOCK_M] floats per (split, n-block)."""
        block = split * tl.num_programs(0) + tl.program_id(0)
        return workspace + (block * PARTS + part) * (BLOCK_N * BLOCK_M)

    @triton.jit
    def _tile_offsets(BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
        return tl.arange(0, BLOCK_N)[:, None] * BLOCK_M + tl.arange(0, BLOCK_M)[None, :]

    @triton.jit
    def _save_partial(workspace, values, part: tl.constexpr, PARTS: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_M: tl.constexpr):  # fmt: skip
        """Store this program's float32 partial [BLOCK_N, BLOCK_M] (products, or sums of squares
        broadcast over the outputs) as `part` of its slot."""
        base = _slot(workspace, tl.program_id(1), part, PARTS, BLOCK_N, BLOCK_M)
        tl.store(base + _tile_offsets(BLOCK_N, BLOCK_M), values + tl.zeros([BLOCK_N, BLOCK_M], tl.float32))

    @triton.jit
    def _arrived_last(counters, SPLIT_K: tl.constexpr):
        """Count this program in at its n-block's counter once its stores are out; true for the last of the
        SPLIT_K, which also sets the counter back to 0 for the next launch."""
        tl.debug_barrier()  # every thread's partial stores are issued before one thread releases them
        counter = counters + tl.program_id(0)
        last = tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == SPLIT_K - 1
        if last:
            tl.store(counter, 0)
        return last

    @triton.jit
    def _sum_partials(workspace, part: tl.constexpr, PARTS: tl.constexpr, SPLIT_K: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):  # fmt: skip
        """Partial `part` summed over the splits in order 0, 1, ... (deterministic), read from L2."""
        offsets = _tile_offsets(BLOCK_N, BLOCK_M)
        total = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        for split in tl.static_range(SPLIT_K):
            base = _slot(workspace, split, part, PARTS, BLOCK_N, BLOCK_M)
            total += tl.load(base + offsets, cache_modifier=".cg")
        return total

    @triton.jit
    def _store_rows(y, values, rows, outs, M, N):
        """values [BLOCK_N, BLOCK_M] (output feature, row) -> y[row, feature] of a contiguous [M, N] y."""
        inside = (rows[None, :] < M) & (outs[:, None] < N)
        tl.store(y + rows[None, :] * N + outs[:, None], values.to(y.dtype.element_ty), mask=inside)

    @triton.jit
    def _round(values, like):
        """float32 values rounded to the element type of pointer `like` (as an eager op's output is)."""
        return values.to(like.dtype.element_ty).to(tl.float32)

    # The three kernels: the product over this program's K range (dot or no-dot), then the epilogue, at
    # once without split-K, else by the last of the n-block's SPLIT_K programs on the summed partials. The
    # sums of squares reach the epilogue as [1, BLOCK_M] (dot) or [BLOCK_N, BLOCK_M] (no-dot: per output
    # row too, the layout of the accumulator), either broadcasting against it.
    @triton.jit
    def _squares_init(BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, DOT: tl.constexpr):
        if DOT:
            squares = tl.zeros([BLOCK_M], tl.float32)
        else:
            squares = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        return squares

    @triton.jit
    def _squares_2d(squares, DOT: tl.constexpr):
        if DOT:
            squares = squares[None, :]
        return squares

    @triton.jit
    def _scaled_weight(w_tile, norm_weight, outs, cols, K, NORM: tl.constexpr):
        """The no-dot form's weight tile in float32, times the norm weight per column when NORM (once per
        step, whatever the row count: the product is the same as with x * norm_weight). The norm weight is
        read tile-shaped, like x, to stay in the tile's layout."""
        w_tile = w_tile.to(tl.float32)
        if NORM:
            pointers = norm_weight + cols[None, :] + 0 * outs[:, None]
            w_tile = w_tile * tl.load(pointers, mask=cols[None, :] < K, other=0.0).to(tl.float32)
        return w_tile

    @triton.jit
    def _rms_norm_linear_epilogue(acc, squares, bias, y, rows, outs, M, N, K, eps, HAS_BIAS: tl.constexpr):
        out = acc * tl.rsqrt(squares / K + eps)
        if HAS_BIAS:
            out += tl.load(bias + outs, mask=outs < N, other=0.0).to(tl.float32)[:, None]
        _store_rows(y, out, rows, outs, M, N)

    @triton.jit
    def _rms_norm_linear_kernel(
        x, norm_weight, w, bias, y, M, N, K, stride_xm, stride_wn, eps, workspace, counters,
        HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        EVEN_K: tl.constexpr, IEEE: tl.constexpr, DOT: tl.constexpr, SPLIT_K: tl.constexpr,
    ):  # fmt: skip
        """y = rsqrt(mean(x^2) + eps) * ((x * norm_weight) @ w.T) (+ bias), one pass over K."""
        outs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rows = tl.arange(0, BLOCK_M)
        acc = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        squares = _squares_init(BLOCK_N, BLOCK_M, DOT)
        k_start, k_end = _k_range(K, BLOCK_K, SPLIT_K)
        for start in range(k_start, k_end, BLOCK_K):
            cols = start + tl.arange(0, BLOCK_K)
            w_tile = _weight_tile(w, outs, cols, N, K, stride_wn, EVEN_K)
            if DOT:
                x_tile, chunk_squares = _x_operand(x, norm_weight, rows, cols, M, K, stride_xm, True, EVEN_K)
                squares += chunk_squares
                acc = _product(w_tile, x_tile, acc, IEEE)
            else:
                w_tile = _scaled_weight(w_tile, norm_weight, outs, cols, K, True)
                for m in tl.static_range(BLOCK_M):
                    x_row = _x_row(x, m, outs, cols, M, K, stride_xm)
                    acc = _add_to_column(acc, tl.sum(w_tile * x_row, axis=1), rows, m)
                    squares = _add_to_column(squares, tl.sum(x_row * x_row, axis=1), rows, m)
        squares = _squares_2d(squares, DOT)
        if SPLIT_K == 1:
            _rms_norm_linear_epilogue(acc, squares, bias, y, rows, outs, M, N, K, eps, HAS_BIAS)
        else:
            _save_partial(workspace, acc, 0, 2, BLOCK_N, BLOCK_M)
            _save_partial(workspace, squares, 1, 2, BLOCK_N, BLOCK_M)
            if _arrived_last(counters, SPLIT_K):
                total = _sum_partials(workspace, 0, 2, SPLIT_K, BLOCK_N, BLOCK_M)
                all_squares = _sum_partials(workspace, 1, 2, SPLIT_K, BLOCK_N, BLOCK_M)
                _rms_norm_linear_epilogue(total, all_squares, bias, y, rows, outs, M, N, K, eps, HAS_BIAS)

    @triton.jit
    def _linear_residual_epilogue(
        acc, bias, residual, y, rows, outs, M, N, stride_rm, HAS_BIAS: tl.constexpr
    ):
        if HAS_BIAS:
            acc += tl.load(bias + outs, mask=outs < N, other=0.0).to(tl.float32)[:, None]
        inside = (rows[None, :] < M) & (outs[:, None] < N)
        skip = tl.load(residual + rows[None, :] * stride_rm + outs[:, None], mask=inside, other=0.0)
        _store_rows(y, _round(acc, y) + skip.to(tl.float32), rows, outs, M, N)

    @triton.jit
    def _linear_residual_kernel(
        x, w, bias, residual, y, M, N, K, stride_xm, stride_wn, stride_rm, workspace, counters,
        HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        EVEN_K: tl.constexpr, IEEE: tl.constexpr, DOT: tl.constexpr, SPLIT_K: tl.constexpr,
    ):  # fmt: skip
        """y = residual + round(x @ w.T (+ bias))."""
        outs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rows = tl.arange(0, BLOCK_M)
        acc = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        k_start, k_end = _k_range(K, BLOCK_K, SPLIT_K)
        for start in range(k_start, k_end, BLOCK_K):
            cols = start + tl.arange(0, BLOCK_K)
            w_tile = _weight_tile(w, outs, cols, N, K, stride_wn, EVEN_K)
            if DOT:
                x_tile, _ = _x_operand(x, x, rows, cols, M, K, stride_xm, False, EVEN_K)
                acc = _product(w_tile, x_tile, acc, IEEE)
            else:
                w_tile = _scaled_weight(w_tile, x, outs, cols, K, False)
                for m in tl.static_range(BLOCK_M):
                    x_row = _x_row(x, m, outs, cols, M, K, stride_xm)
                    acc = _add_to_column(acc, tl.sum(w_tile * x_row, axis=1), rows, m)
        if SPLIT_K == 1:
            _linear_residual_epilogue(acc, bias, residual, y, rows, outs, M, N, stride_rm, HAS_BIAS)
        else:
            _save_partial(workspace, acc, 0, 1, BLOCK_N, BLOCK_M)
            if _arrived_last(counters, SPLIT_K):
                total = _sum_partials(workspace, 0, 1, SPLIT_K, BLOCK_N, BLOCK_M)
                _linear_residual_epilogue(total, bias, residual, y, rows, outs, M, N, stride_rm, HAS_BIAS)

    @triton.jit
    def _rms_norm_swiglu_epilogue(gate, up, squares, y, rows, outs, M, H, K, eps):
        scale = tl.rsqrt(squares / K + eps)
        gate = _round(gate * scale, y)
        up = _round(up * scale, y)
        _store_rows(y, _round(gate * tl.sigmoid(gate), y) * up, rows, outs, M, H)

    @triton.jit
    def _rms_norm_swiglu_kernel(
        x, norm_weight, w, y, M, H, K, stride_xm, stride_wn, eps, workspace, counters,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
        IEEE: tl.constexpr, DOT: tl.constexpr, SPLIT_K: tl.constexpr,
    ):  # fmt: skip
        """y = silu(gate) * up with [gate; up] = rsqrt(mean(x^2) + eps) * ((x * norm_weight) @ w.T), w =
        [W1; W3] [2H, K]: each program takes the same BLOCK_N features of both halves."""
        outs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rows = tl.arange(0, BLOCK_M)
        gate = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        up = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        squares = _squares_init(BLOCK_N, BLOCK_M, DOT)
        w_up = w + H * stride_wn
        k_start, k_end = _k_range(K, BLOCK_K, SPLIT_K)
        for start in range(k_start, k_end, BLOCK_K):
            cols = start + tl.arange(0, BLOCK_K)
            w_gate = _weight_tile(w, outs, cols, H, K, stride_wn, EVEN_K)
            w_upper = _weight_tile(w_up, outs, cols, H, K, stride_wn, EVEN_K)
            if DOT:
                x_tile, chunk_squares = _x_operand(x, norm_weight, rows, cols, M, K, stride_xm, True, EVEN_K)
                squares += chunk_squares
                gate = _product(w_gate, x_tile, gate, IEEE)
                up = _product(w_upper, x_tile, up, IEEE)
            else:
                w_gate = _scaled_weight(w_gate, norm_weight, outs, cols, K, True)
                w_upper = _scaled_weight(w_upper, norm_weight, outs, cols, K, True)
                for m in tl.static_range(BLOCK_M):
                    x_row = _x_row(x, m, outs, cols, M, K, stride_xm)
                    gate = _add_to_column(gate, tl.sum(w_gate * x_row, axis=1), rows, m)
                    up = _add_to_column(up, tl.sum(w_upper * x_row, axis=1), rows, m)
                    squares = _add_to_column(squares, tl.sum(x_row * x_row, axis=1), rows, m)
        squares = _squares_2d(squares, DOT)
        if SPLIT_K == 1:
            _rms_norm_swiglu_epilogue(gate, up, squares, y, rows, outs, M, H, K, eps)
        else:
            _save_partial(workspace, gate, 0, 3, BLOCK_N, BLOCK_M)
            _save_partial(workspace, up, 1, 3, BLOCK_N, BLOCK_M)
            _save_partial(workspace, squares, 2, 3, BLOCK_N, BLOCK_M)
            if _arrived_last(counters, SPLIT_K):
                gate_total = _sum_partials(workspace, 0, 3, SPLIT_K, BLOCK_N, BLOCK_M)
                up_total = _sum_partials(workspace, 1, 3, SPLIT_K, BLOCK_N, BLOCK_M)
                all_squares = _sum_partials(workspace, 2, 3, SPLIT_K, BLOCK_N, BLOCK_M)
                _rms_norm_swiglu_epilogue(gate_total, up_total, all_squares, y, rows, outs, M, H, K, eps)


# ---------------------------------------------------------------------------------------------- launches
def _require_triton() -> None:
    if triton is None:
        raise InputError("the decode kernels need Triton, which this torch build lacks; use the ops instead")


def rms_norm_linear_triton(
    x: Tensor,
    norm_weight: Tensor,
    eps: float,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    config: KernelConfig | None = None,
) -> Tensor:
    """`rms_norm_linear` by the Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1); at most 16 rows
    (4 for a no-dot config)."""
    _require_triton()
    _check_rms_norm_linear(x, norm_weight, weight, bias)
    return _rms_norm_linear_launch(x, norm_weight, eps, weight, bias, config)


def _rms_norm_linear_launch(
    x: Tensor,
    norm_weight: Tensor,
    eps: float,
    weight: Tensor,
    bias: Tensor | None,
    config: KernelConfig | None,
) -> Tensor:
    """The launch of `rms_norm_linear_triton`, on checked inputs (the op's path: its caller checked them)."""
    x2d, weight, (rows, k, n), config, y = _prepared("rms_norm_linear_triton", x, weight, config)
    args = (x2d, norm_weight, weight, weight if bias is None else bias, y, rows, n, k, x2d.stride(0),
            weight.stride(0), float(eps))  # fmt: skip
    _launch(
        _rms_norm_linear_kernel, "rms_norm_linear_triton", config, x2d, n, 2, args, HAS_BIAS=bias is not None
    )
    return y.view(*x.shape[:-1], n)


def linear_residual_triton(
    x: Tensor,
    weight: Tensor,
    residual: Tensor,
    bias: Tensor | None = None,
    *,
    config: KernelConfig | None = None,
) -> Tensor:
    """`linear_residual` by the Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1); at most 16 rows
    (4 for a no-dot config)."""
    _require_triton()
    _check_linear_residual(x, weight, residual, bias)
    return _linear_residual_launch(x, weight, residual, bias, config)


def _linear_residual_launch(
    x: Tensor,
    weight: Tensor,
    residual: Tensor,
    bias: Tensor | None,
    config: KernelConfig | None,
    counters: Tensor | None = None,
) -> Tensor:
    """The launch of `linear_residual_triton`, on checked inputs (the op's path: its caller checked them);
    with `counters` the default config may split K (`kernel_config(split=True)`)."""
    x2d, weight, (rows, k, n), config, y = _prepared(
        "linear_residual_triton", x, weight, config, split=counters is not None
    )
    skip = residual.reshape(rows, n)
    skip = skip if skip.stride(-1) == 1 else skip.contiguous()
    args = (x2d, weight, weight if bias is None else bias, skip, y, rows, n, k, x2d.stride(0), weight.stride(0),
            skip.stride(0))  # fmt: skip
    _launch(
        _linear_residual_kernel, "linear_residual_triton", config, x2d, n, 1, args, counters,
        HAS_BIAS=bias is not None,
    )  # fmt: skip
    return y.view(*x.shape[:-1], n)


def rms_norm_swiglu_triton(
    x: Tensor,
    norm_weight: Tensor,
    eps: float,
    gate_up_weight: Tensor,
    *,
    config: KernelConfig | None = None,
) -> Tensor:
    """`rms_norm_swiglu` by the Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1); at most 16 rows
    (4 for a no-dot config)."""
    _require_triton()
    _check_rms_norm_swiglu(x, norm_weight, gate_up_weight)
    return _rms_norm_swiglu_launch(x, norm_weight, eps, gate_up_weight, config)


def _rms_norm_swiglu_launch(
    x: Tensor, norm_weight: Tensor, eps: float, gate_up_weight: Tensor, config: KernelConfig | None
) -> Tensor:
    """The launch of `rms_norm_swiglu_triton`, on checked inputs (the op's path: its caller checked them)."""
    x2d, weight, (rows, k, hidden), config, y = _prepared(
        "rms_norm_swiglu_triton", x, gate_up_weight, config, weight_blocks=2
    )
    args = (x2d, norm_weight, weight, y, rows, hidden, k, x2d.stride(0), weight.stride(0), float(eps))
    _launch(_rms_norm_swiglu_kernel, "rms_norm_swiglu_triton", config, x2d, hidden, 3, args)
    return y.view(*x.shape[:-1], hidden)


# ---------------------------------------------------------------------------------------------- ops
@triton_op("genloom_core::rms_norm_linear", mutates_args=())
def _rms_norm_linear_op(
    x: Tensor, norm_weight: Tensor, eps: float, weight: Tensor, bias: Tensor | None
) -> Tensor:
    if _triton_serves(x):
        return _rms_norm_linear_launch(x, norm_weight, eps, weight, bias, None)
    return rms_norm_linear_reference(x, norm_weight, eps, weight, bias)


@triton_op("genloom_core::linear_residual", mutates_args={"counters"})
def _linear_residual_op(
    x: Tensor, weight: Tensor, residual: Tensor, bias: Tensor | None, counters: Tensor | None
) -> Tensor:
    if _triton_serves(x):
        return _linear_residual_launch(x, weight, residual, bias, None, counters)
    return linear_residual_reference(x, weight, residual, bias)


@triton_op("genloom_core::rms_norm_swiglu", mutates_args=())
def _rms_norm_swiglu_op(x: Tensor, norm_weight: Tensor, eps: float, gate_up_weight: Tensor) -> Tensor:
    if _triton_serves(x):
        return _rms_norm_swiglu_launch(x, norm_weight, eps, gate_up_weight, None)
    return rms_norm_swiglu_reference(x, norm_weight, eps, gate_up_weight)


def rms_norm_linear(
    x: Tensor, norm_weight: Tensor, eps: float, weight: Tensor, bias: Tensor | None = None
) -> Tensor:
    """`F.linear(RMSNorm(x) * norm_weight, weight, bias)`: x [..., K], norm_weight [K], weight [N, K], bias
    [N] -> [..., N] in x's dtype. One Triton kernel for CUDA inputs of <= 16 rows, torch otherwise."""
    _check_rms_norm_linear(x, norm_weight, weight, bias)
    return _rms_norm_linear_op(x, norm_weight, float(eps), weight, bias)


def linear_residual(
    x: Tensor, weight: Tensor, residual: Tensor, bias: Tensor | None = None, counters: Tensor | None = None
) -> Tensor:
    """`residual + F.linear(x, weight, bias)`: x [..., K], weight [N, K], residual [..., N] -> [..., N].
    One Triton kernel for CUDA inputs of <= 16 rows, torch otherwise. `counters`: zeroed int32 arrival
    counters (one per block of 8 outputs; left zero), which let a product of few outputs split its K over
    more programs (`kernel_config(split=True)`; `KVCache.sync` holds a layer's)."""
    _check_linear_residual(x, weight, residual, bias)
    return _linear_residual_op(x, weight, residual, bias, counters)


def rms_norm_swiglu(x: Tensor, norm_weight: Tensor, eps: float, gate_up_weight: Tensor) -> Tensor:
    """`silu(gate) * up` with `gate, up = F.linear(RMSNorm(x) * norm_weight, gate_up_weight).chunk(2)`:
    x [..., K], gate_up_weight [2H, K] (rows [W1; W3]) -> [..., H]. One Triton kernel for CUDA inputs of <=
    16 rows, torch otherwise."""
    _check_rms_norm_swiglu(x, norm_weight, gate_up_weight)
    return _rms_norm_swiglu_op(x, norm_weight, float(eps), gate_up_weight)
