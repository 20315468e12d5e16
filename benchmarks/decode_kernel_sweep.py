"""Which launch config of the fused decode kernels beats cuBLAS? Every LlamaGen product of a decode step, timed.

    python benchmarks/decode_kernel_sweep.py [--size B|XL] [--rows 2] [--out sweep.json] [--budget-s 330]
        [--max-configs 60] [--shapes qkv,wo] [--quick] [--device cpu]

Why: on an H100 the 49 fused kernels of a LlamaGen-B decode step (2 rows, bf16, CUDA graph,
benchmarks/decode_step_profile.py) took 339 us against 273 us for the 61 cuBLAS GEMVs of the same weights:
~6.9 us per Triton kernel where cuBLAS takes ~4.5 us per GEMV whatever its size (2-7 MB of weights: 0.8-1.6
TB/s of ~3.3 TB/s); the whole step 495 us fused against 441 us. A fused kernel has to land near 2.5-3 us
for these shapes to pay, and which config gets there is unknown. This script measures many candidates in one
GPU call, per product of one layer (and the head):

- qkv: `rms_norm_linear`, [3 dim, dim] with the attention norm; wo: `linear_residual`, [dim, dim] + residual;
  gate_up: `rms_norm_swiglu`, [2 hidden, dim] with the MLP norm; w2: `linear_residual`, [dim, hidden] +
  residual; head: `rms_norm_linear`, [vocab, dim] with the final norm (B: dim 768, hidden 2048; XL: 1280,
  3584, LlamaGen's SwiGLU rule 2/3 x 4 dim rounded up to 256; vocab 16,384);
- reference: the torch ops as the model runs them (the `RMSNorm` module + `F.linear`, + residual, SwiGLU's
  chunk / silu / multiply) under torch.compile(dynamic=False), so inductor fuses the pointwise work around
  cuBLAS as in the compiled step;
- candidates: `KernelConfig`s of the dot form (BLOCK_N 16-128) and, for <= 4 rows, the no-dot GEMV form
  (BLOCK_N 8-64), BLOCK_K 64-512, split-K 1/2/4/8, warps 2/4/8, stages 2-5 (the no-dot form is not software
  pipelined by Triton: stages 1 and 3). The full space (after the pruning below) is too large to compile in
  a few minutes (Triton takes ~0.5-2 s per config), so it is searched in two phases per shape: phase 1
  tries launch shapes (form, BLOCK_N, BLOCK_K, split-K) at 4 warps (dot: 4 stages; no-dot: 1), the most
  promising first (about 2 programs per SM, few K steps); phase 2 tries warps x stages around the best four.
  Pruned up front: splits without a K step of their own, fewer than 32 or more than 8192 programs, dot
  configs whose pipeline would not fit shared memory, no-dot tiles of more than 64 elements per thread.

Timing: each candidate (and the reference) as one CUDA graph of back-to-back calls over rotating inputs,
outputs and weight copies, enough copies that the weights of one replay exceed the H100's 50 MB L2 twice
over (at least 20 calls), median over 30 replays, per call. Each candidate is compared once with the eager
reference (bf16 tolerance) before timing; wrong ones are dropped and printed. Configs that fail to compile
or launch (shared memory, registers) are counted and skipped. The bandwidth floor of a shape is its weight
bytes over the device-to-device copy bandwidth measured here ((read + write) bytes / time of a 512 MB copy).

Output: per shape the reference, the best five configs (us, TB/s, ratio to the reference and the floor), a
summary table at the end, and JSON (`--out`, rewritten after every shape so that a timeout keeps what was
measured). `--budget-s` bounds the whole run (each shape gets an equal share of what is left); `--quick` is a
dry run (4 configs a shape, 5 replays; on the CPU: the references and the candidate counts only).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

from genloom.core.bench import measure, measure_ceilings
from genloom.core.nn import decode_kernels as dk
from genloom.core.nn.config import TransformerConfig
from genloom.core.nn.norms import RMSNorm

SIZES = {"B": 768, "XL": 1280}  # LlamaGen GPT widths (genloom.image.official_sizes.LLAMAGEN_SIZES)
VOCAB = 16384
L2_BYTES = 50 * 2**20  # an H100's L2
EPS = 1e-5
TOLERANCE = 2e-2  # bf16 relative error against the eager reference

DOT_BLOCK_N = (16, 32, 64, 128)
NO_DOT_BLOCK_N = (8, 16, 32, 64)
BLOCK_K = (64, 128, 256, 512)
SPLIT_K = (1, 2, 4, 8)
WARPS = (2, 4, 8)
DOT_STAGES = (2, 3, 4, 5)
NO_DOT_STAGES = (1, 3)
SHARED_BYTES = 200 * 1024  # an H100 SM has 227 kB; leave room for the epilogue's scratch


@dataclass(frozen=True)
class Product:
    """One fused product: `kernel` with `n` outputs (per half for SwiGLU) and `k` inputs."""

    name: str
    kernel: str
    n: int
    k: int

    @property
    def weight_blocks(self) -> int:
        return 2 if self.kernel == "rms_norm_swiglu" else 1

    def weight_bytes(self, element_size: int) -> int:
        return self.weight_blocks * self.n * self.k * element_size


def products(size: str) -> list[Product]:
    dim = SIZES[size]
    hidden = TransformerConfig(dim=dim, n_heads=dim // 64, mlp="swiglu", mlp_multiple_of=256).mlp_hidden
    return [
        Product("qkv", "rms_norm_linear", 3 * dim, dim),
        Product("wo", "linear_residual", dim, dim),
        Product("gate_up", "rms_norm_swiglu", hidden, dim),
        Product("w2", "linear_residual", dim, hidden),
        Product("head", "rms_norm_linear", VOCAB, dim),
    ]


# ---------------------------------------------------------------------------------------------- candidates
def _valid(product: Product, config: dk.KernelConfig, rows: int, element_size: int) -> bool:
    """The pruning rules of the module docstring."""
    steps = math.ceil(product.k / config.block_k)
    if config.split_k > steps or config.block_k > max(64, 1 << (product.k - 1).bit_length()):
        return False
    grid_n = math.ceil(product.n / config.block_n)
    if not 32 <= grid_n * config.split_k <= 8192 or grid_n > dk.COUNTER_SLOTS:
        return False
    if config.dot:
        staged = (config.block_n * product.weight_blocks + dk.MAX_ROWS) * config.block_k * element_size
        return staged * max(1, config.num_stages - 1) <= SHARED_BYTES
    if rows > dk.NO_DOT_MAX_ROWS:
        return False
    per_thread = product.weight_blocks * config.block_n * config.block_k / (32 * config.num_warps)
    return per_thread <= 64


def config_space(product: Product, rows: int, element_size: int) -> list[dk.KernelConfig]:
    """Every valid candidate of the swept space."""
    space = []
    for dot, block_ns, stages in ((True, DOT_BLOCK_N, DOT_STAGES), (False, NO_DOT_BLOCK_N, NO_DOT_STAGES)):
        for block_n in block_ns:
            for block_k in BLOCK_K:
                for split_k in SPLIT_K:
                    for warps in WARPS:
                        for stage in stages:
                            config = dk.KernelConfig(block_n, block_k, warps, stage, split_k, dot)
                            if _valid(product, config, rows, element_size):
                                space.append(config)
    return space


def _promise(product: Product, config: dk.KernelConfig) -> float:
    """Lower is more promising: about two programs per SM (264), few K steps per program (more so for the
    no-dot form, whose steps are not pipelined: each waits for its loads)."""
    programs = math.ceil(product.n / config.block_n) * config.split_k
    steps = math.ceil(product.k / config.split_k / config.block_k)
    return abs(math.log2(programs / 264)) + (0.3 if config.dot else 0.6) * steps


def phase_one(
    product: Product, space: list[dk.KernelConfig], default: dk.KernelConfig
) -> list[dk.KernelConfig]:
    """Launch shapes at the base warps / stages, the module's default config first, then the two forms
    alternately, each most promising first."""
    base = [c for c in space if c.num_warps == 4 and c.num_stages == (4 if c.dot else 1)]
    forms = [
        sorted((c for c in base if c.dot == dot), key=lambda c: _promise(product, c)) for dot in (True, False)
    ]
    merged = [c for pair in itertools.zip_longest(*forms) for c in pair if c is not None]
    return [default, *(c for c in merged if c != default)]


def phase_two(space: list[dk.KernelConfig], best: list[dk.KernelConfig]) -> list[dk.KernelConfig]:
    """Warps x stages around the best launch shapes, in the order of their phase-one times."""
    out = []
    for base in best:
        out += [
            c
            for c in space
            if (c.block_n, c.block_k, c.split_k, c.dot)
            == (base.block_n, base.block_k, base.split_k, base.dot)
        ]
    return out


def describe(config: dk.KernelConfig) -> str:
    form = "dot" if config.dot else "nodot"
    return f"{form} N{config.block_n} K{config.block_k} w{config.num_warps} s{config.num_stages} sk{config.split_k}"


# ---------------------------------------------------------------------------------------------- operands
@dataclass
class Operands:
    """Rotating copies of one product's inputs: x [rows, 1, K], residual [rows, 1, N], weight [(2)N, K]; one
    norm (its weight is tiny, read from L2 either way)."""

    xs: list[torch.Tensor]
    residuals: list[torch.Tensor]
    weights: list[torch.Tensor]
    norm: RMSNorm
    calls: int = 20

    def copy(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        j = i % len(self.weights)
        return self.xs[j], self.residuals[j], self.weights[j]


def make_operands(
    product: Product, rows: int, dtype: torch.dtype, device: torch.device, quick: bool
) -> Operands:
    g = torch.Generator(device=device).manual_seed(0)
    bytes_per_copy = product.weight_bytes(torch.finfo(dtype).bits // 8)
    copies = 2 if quick else max(2, math.ceil(2 * L2_BYTES / bytes_per_copy))
    out_rows = product.weight_blocks * product.n

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, device=device, generator=g) * scale).to(dtype)

    norm = RMSNorm(product.k, eps=EPS).to(device, dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(product.k, device=device, generator=g) + 0.5)
    return Operands(
        xs=[randn(rows, 1, product.k) for _ in range(copies)],
        residuals=[randn(rows, 1, product.n) for _ in range(copies)],
        weights=[randn(out_rows, product.k, scale=product.k**-0.5) for _ in range(copies)],
        norm=norm,
        calls=max(2 if quick else 20, copies),
    )


def reference_fn(product: Product, norm: RMSNorm) -> Callable[..., torch.Tensor]:
    """The product as the model's modules run it: (x, residual, weight) -> output."""
    if product.kernel == "rms_norm_linear":
        return lambda x, residual, weight: F.linear(norm(x), weight)
    if product.kernel == "linear_residual":
        return lambda x, residual, weight: residual + F.linear(x, weight)

    def swiglu(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(norm(x), weight).chunk(2, dim=-1)
        return F.silu(gate) * up

    return swiglu


def fused_fn(product: Product, norm: RMSNorm, config: dk.KernelConfig) -> Callable[..., torch.Tensor]:
    w = norm.weight.detach()
    if product.kernel == "rms_norm_linear":
        return lambda x, residual, weight: dk.rms_norm_linear_triton(x, w, EPS, weight, config=config)
    if product.kernel == "linear_residual":
        return lambda x, residual, weight: dk.linear_residual_triton(x, weight, residual, config=config)
    return lambda x, residual, weight: dk.rms_norm_swiglu_triton(x, w, EPS, weight, config=config)


# ---------------------------------------------------------------------------------------------- timing
def graph_us(fn: Callable[..., torch.Tensor], ops: Operands, replays: int) -> float:
    """Median microseconds per call of `ops.calls` back-to-back calls of `fn` over the rotating copies,
    captured as one CUDA graph (the first call of each copy, which compiles and allocates, runs outside)."""
    for i in range(min(ops.calls, len(ops.weights))):
        fn(*ops.copy(i))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(ops.calls):
            fn(*ops.copy(i))
    seconds = measure(graph.replay, warmup=2, iters=replays, device="cuda").median
    del graph
    return seconds * 1e6 / ops.calls


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large device-to-device copy, counting the bytes read and written."""
    return measure_ceilings(device, copy_bytes=512 * 2**20, matmul=1024).memory_bandwidth


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30)).item()


def _fatal(error: BaseException) -> bool:
    """A CUDA error that leaves the context unusable (every later call would fail too)."""
    text = str(error)
    return "illegal" in text or "unspecified launch failure" in text or "device-side assert" in text


# ---------------------------------------------------------------------------------------------- sweep
@dataclass
class ShapeResult:
    product: Product
    weight_mb: float
    floor_us: float
    reference_us: float | None = None
    results: list[dict] = field(default_factory=list)
    space: int = 0
    failed: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    untried: int = 0

    def best(self, count: int = 5) -> list[dict]:
        return sorted(self.results, key=lambda r: r["us"])[:count]

    def to_json(self) -> dict:
        return {
            **asdict(self.product),
            "weight_mb": self.weight_mb,
            "floor_us": self.floor_us,
            "reference_us": self.reference_us,
            "space": self.space,
            "tried": len(self.results) + len(self.failed) + len(self.wrong),
            "failed": self.failed,
            "wrong": self.wrong,
            "best": self.best(),
            "results": sorted(self.results, key=lambda r: r["us"]),
        }


def say(text: str) -> None:
    print(text, flush=True)


def sweep_shape(
    product: Product,
    args: argparse.Namespace,
    device: torch.device,
    copy_bw: float,
    deadline: float,
) -> ShapeResult:
    dtype = torch.bfloat16
    element_size = 2
    bytes_ = product.weight_bytes(element_size)
    shape = ShapeResult(product, bytes_ / 1e6, bytes_ / copy_bw * 1e6 if copy_bw else float("nan"))
    ops = make_operands(product, args.rows, dtype, device, args.quick)
    reference = reference_fn(product, ops.norm)
    say(
        f"\n== {product.name}: {product.kernel} N={product.n} K={product.k} rows={args.rows}, weight "
        f"{shape.weight_mb:.2f} MB, {len(ops.weights)} copies, {ops.calls} calls a replay"
    )
    space = config_space(product, args.rows, element_size)
    shape.space = len(space)
    with torch.no_grad():
        expected = reference(*ops.copy(0))
        if device.type != "cuda":
            first = phase_one(product, space, _default(product, element_size))
            say(f"   reference ran on {device} (output {tuple(expected.shape)}); {len(space)} candidates, "
                f"{len(first)} launch shapes in phase 1 (the kernels need CUDA: nothing timed)")  # fmt: skip
            return shape
        started = time.perf_counter()
        compiled = torch.compile(reference, dynamic=False)
        shape.reference_us = graph_us(compiled, ops, args.replays)
        say(
            f"   cuBLAS reference (torch.compile): {shape.reference_us:.2f} us "
            f"({bytes_ / shape.reference_us / 1e6:.2f} TB/s; compiled in {time.perf_counter() - started:.0f} s); "
            f"floor {shape.floor_us:.2f} us at {copy_bw / 1e12:.2f} TB/s copy; {len(space)} candidates"
        )
        tried: set[dk.KernelConfig] = set()
        max_configs = 4 if args.quick else args.max_configs

        def run(configs: list[dk.KernelConfig], stop_at: float, limit: int) -> None:
            for config in configs:
                if config in tried:
                    continue
                if len(tried) >= limit or time.perf_counter() > stop_at:
                    return
                tried.add(config)
                label = describe(config)
                fn = fused_fn(product, ops.norm, config)
                t0 = time.perf_counter()
                try:
                    err = rel_err(fn(*ops.copy(0)), expected)
                    if not err < TOLERANCE:
                        shape.wrong.append(label)
                        say(f"   !! WRONG {label}: relative error {err:.3g} (dropped)")
                        continue
                    us = graph_us(fn, ops, args.replays)
                except Exception as error:  # noqa: BLE001 - compile / launch failures are counted, not fatal
                    if _fatal(error):
                        raise
                    shape.failed.append(f"{label}: {type(error).__name__}: {str(error)[:120]}")
                    say(f"   -- {label}: failed ({type(error).__name__}: {str(error).splitlines()[0][:100]})")
                    continue
                record = {
                    "config": asdict(config),
                    "label": label,
                    "us": us,
                    "tb_s": bytes_ / us / 1e6,
                    "vs_reference": us / shape.reference_us,
                    "err": err,
                }
                shape.results.append(record)
                say(
                    f"   [{len(tried):3d}] {label:32s} {us:7.2f} us {record['tb_s']:5.2f} TB/s "
                    f"x{record['vs_reference']:.2f} ref ({time.perf_counter() - t0:.1f} s)"
                )

        budget = deadline - time.perf_counter()
        run(phase_one(product, space, _default(product, element_size)), time.perf_counter() + 0.6 * budget,
            math.ceil(0.6 * max_configs))  # fmt: skip
        best_shapes: list[dk.KernelConfig] = []
        for record in shape.best(len(shape.results)):
            config = dk.KernelConfig(**record["config"])
            base = replace(config, num_warps=4, num_stages=4 if config.dot else 1)
            if base not in best_shapes:
                best_shapes.append(base)
        run(phase_two(space, best_shapes[:4]), deadline, max_configs)
        shape.untried = len(set(space) - tried)
    report_shape(shape)
    return shape


def _default(product: Product, element_size: int) -> dk.KernelConfig:
    return dk.kernel_config(product.n, product.k, element_size, weight_blocks=product.weight_blocks)


def report_shape(shape: ShapeResult) -> None:
    say(
        f"   {shape.product.name}: {len(shape.results)} timed, {len(shape.failed)} failed to compile / launch, "
        f"{len(shape.wrong)} wrong, {shape.untried} of {shape.space} untried; reference "
        f"{shape.reference_us:.2f} us, floor {shape.floor_us:.2f} us"
    )
    for rank, record in enumerate(shape.best(), 1):
        say(
            f"   #{rank} {record['label']:32s} {record['us']:7.2f} us {record['tb_s']:5.2f} TB/s "
            f"x{record['vs_reference']:.2f} reference, x{record['us'] / shape.floor_us:.2f} floor"
        )


def summary(shapes: list[ShapeResult]) -> None:
    say("\n| shape | kernel | N x K | reference us | best fused us | best / ref | best config | floor us |")
    say("|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        best = shape.best(1)
        p = shape.product
        ref = f"{shape.reference_us:.2f}" if shape.reference_us else "-"
        if best:
            fused, ratio = f"{best[0]['us']:.2f}", f"{best[0]['us'] / shape.reference_us:.2f}"
            label = best[0]["label"]
        else:
            fused, ratio, label = "-", "-", "-"
        say(
            f"| {p.name} | {p.kernel} | {p.n} x {p.k} | {ref} | {fused} | {ratio} | {label} | {shape.floor_us:.2f} |"
        )


def write_json(path: str | None, args: argparse.Namespace, copy_bw: float, shapes: list[ShapeResult]) -> None:
    if not path:
        return
    try:
        import triton
    except ImportError:
        triton = None
    payload = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "triton": triton.__version__ if triton else None,
        "size": args.size,
        "rows": args.rows,
        "copy_tb_s": copy_bw / 1e12,
        "shapes": [shape.to_json() for shape in shapes],
    }
    with open(path, "w") as out:
        json.dump(payload, out, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="B", choices=sorted(SIZES))
    parser.add_argument("--rows", type=int, default=2, help="rows of x (2: batch 1 with CFG)")
    parser.add_argument("--shapes", default=None, help="comma-separated subset of qkv,wo,gate_up,w2,head")
    parser.add_argument("--max-configs", type=int, default=60, help="candidates timed per shape at most")
    parser.add_argument("--budget-s", type=float, default=330.0, help="wall-clock bound of the whole run")
    parser.add_argument("--replays", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="dry run: 4 configs a shape, 5 replays")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    deadline = time.perf_counter() + args.budget_s
    if args.quick:
        args.replays = min(args.replays, 5)
    if not 1 <= args.rows <= dk.MAX_ROWS:
        sys.exit(f"--rows must be 1..{dk.MAX_ROWS} (the kernels' limit), got {args.rows}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --quick for a dry run of the references")
    if device.type != "cuda" and not args.quick:
        sys.exit("the fused kernels are timed on CUDA only; --device cpu needs --quick (a dry run)")
    todo = products(args.size)
    if args.shapes:
        todo = [p for p in todo if p.name in args.shapes.split(",")]
    copy_bw = copy_bandwidth(device) if device.type == "cuda" else 0.0
    if (
        device.type == "cuda"
    ):  # inductor's cold start (imports, compile workers) outside the first shape's share
        started = time.perf_counter()
        torch.compile(lambda a, b: F.linear(a, b) * 2, dynamic=False)(*torch.ones(2, 8, 8, device=device))
        say(f"inductor warmed up in {time.perf_counter() - started:.0f} s")
    say(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else device}; copy bandwidth "
        f"{copy_bw / 1e12:.2f} TB/s; LlamaGen-{args.size}, {args.rows} rows, bf16")  # fmt: skip
    shapes: list[ShapeResult] = []
    for index, product in enumerate(todo):
        share = (deadline - time.perf_counter()) / (len(todo) - index)
        try:
            shapes.append(sweep_shape(product, args, device, copy_bw, time.perf_counter() + share))
        except Exception as error:  # a CUDA error that poisons the context: keep what was measured
            say(f"!! FATAL on {product.name}: {type(error).__name__}: {error}; stopping the sweep")
            break
        write_json(args.out, args, copy_bw, shapes)
    if device.type == "cuda":
        summary(shapes)
        write_json(args.out, args, copy_bw, shapes)


if __name__ == "__main__":
    main()
