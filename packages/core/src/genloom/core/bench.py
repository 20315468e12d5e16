"""Benchmark helpers: time a function correctly on CPU or CUDA and print it beside its physical floor.

DESIGN.md section 4 asks every benchmark to show its figure next to the floor the hardware allows:
`bytes moved / memory bandwidth` or `FLOPs / peak`, whichever is larger. `measure` times with CUDA events
after warm-up (with a synchronize, so queued kernels are counted), `floor_seconds` computes the floor from
a `DeviceSpec` (datasheet peaks of common GPUs, or your own), and `format_table` renders the rows.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class DeviceSpec:
    """Datasheet peaks of one device: dense bf16 tensor-core FLOP/s and memory bandwidth in bytes/s."""

    name: str
    bf16_flops: float
    memory_bandwidth: float


# Dense (no sparsity) bf16 tensor-core peaks and HBM bandwidth from the vendors' datasheets (SXM parts).
KNOWN_DEVICES: dict[str, DeviceSpec] = {
    "H200": DeviceSpec("NVIDIA H200", bf16_flops=989.4e12, memory_bandwidth=4.8e12),
    "H100 80GB HBM3": DeviceSpec("NVIDIA H100 SXM", bf16_flops=989.4e12, memory_bandwidth=3.35e12),
    "H100 PCIe": DeviceSpec("NVIDIA H100 PCIe", bf16_flops=756.0e12, memory_bandwidth=2.0e12),
    "A100-SXM4-80GB": DeviceSpec("NVIDIA A100 SXM 80GB", bf16_flops=312.0e12, memory_bandwidth=2.039e12),
    "A100-SXM4-40GB": DeviceSpec("NVIDIA A100 SXM 40GB", bf16_flops=312.0e12, memory_bandwidth=1.555e12),
}


def device_spec(device: torch.device | str | None = None) -> DeviceSpec | None:
    """The spec of a CUDA device matched by name in KNOWN_DEVICES (None on CPU or an unknown GPU)."""
    device = torch.device(device) if device is not None else None
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    for key, spec in KNOWN_DEVICES.items():
        if key in name:
            return spec
    return None


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed iterations (after warm-up)."""

    median: float
    mean: float
    minimum: float
    iterations: int


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 3,
    iters: int = 10,
    device: torch.device | str | None = None,
) -> Timing:
    """Call `fn` `warmup` times untimed, then time `iters` calls one by one.

    On CUDA each call is bracketed by CUDA events and the stream is synchronised before reading them, so
    asynchronous kernels are fully counted; on CPU `time.perf_counter` is used.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    device = torch.device(device) if device is not None else None
    on_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    for _ in range(warmup):
        fn()
    times = []
    if on_cuda:
        torch.cuda.synchronize(device)
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
    else:
        for _ in range(iters):
            start_s = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start_s)
    return Timing(statistics.median(times), statistics.fmean(times), min(times), iters)


def graph_time(fn: Callable[[], object], device: torch.device | str, replays: int = 50) -> float:
    """Median seconds of one replay of `fn` captured as a CUDA graph (after 3 plain calls, which compile
    what needs compiling, and 3 untimed replays); off CUDA, of a plain call (to check a script)."""
    device = torch.device(device)
    for _ in range(3):
        fn()
    if device.type != "cuda":
        return measure(fn, warmup=0, iters=5, device=device).median
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return measure(graph.replay, warmup=3, iters=replays, device=device).median


def measure_ceilings(
    device: torch.device | str = "cuda", *, copy_bytes: int = 1 << 30, matmul: int = 8192
) -> DeviceSpec:
    """Measure the two ceilings a floor is computed from, on random data (METHOD.md): device-to-device copy
    bandwidth (bytes read + bytes written per second) and the bf16 matrix-product rate (FLOP/s)."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"ceilings are measured on a CUDA device, got {device}")
    copy_seconds = _time_copy(device, copy_bytes)
    matmul_seconds = _time_matmul(device, matmul)
    torch.cuda.empty_cache()
    name = f"{torch.cuda.get_device_name(device)} (measured)"
    return DeviceSpec(
        name, bf16_flops=2 * matmul**3 / matmul_seconds, memory_bandwidth=2 * copy_bytes / copy_seconds
    )


def _time_copy(device: torch.device, n_bytes: int) -> float:
    generator = torch.Generator(device).manual_seed(0)
    source = torch.randint(0, 255, (n_bytes,), dtype=torch.uint8, device=device, generator=generator)
    target = torch.empty_like(source)
    return measure(lambda: target.copy_(source), warmup=3, iters=20, device=device).median


def _time_matmul(device: torch.device, n: int) -> float:
    generator = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=generator)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=generator)
    return measure(lambda: a @ b, warmup=3, iters=20, device=device).median


def floor_seconds(*, spec: DeviceSpec, flops: float = 0.0, bytes_moved: float = 0.0) -> float:
    """The fastest the hardware could possibly do it: max(FLOPs / peak, bytes / bandwidth)."""
    return max(flops / spec.bf16_flops, bytes_moved / spec.memory_bandwidth)


def kernel_row(name: str, ours_us: float, references_us: Sequence[float], floor_us: float) -> str:
    """One markdown row of a kernel benchmark (`benchmarks/linear_gelu.py`, `padded_attention.py`): our time,
    the references' times, the FLOP floor and ours over it, all in us."""
    cells = " | ".join(f"{t:.1f}" for t in (ours_us, *references_us, floor_us))
    return f"| {name} | {cells} | {ours_us / floor_us:.1f}x |"


def finish_kernel_table(
    rows: list[dict], spec: DeviceSpec | None, device: torch.device, out: Path | None
) -> None:
    """After a kernel benchmark's rows: print the matmul rate the floors came from, write the rows as JSON."""
    if spec:
        print(f"\n{spec.name}: bf16 matmul {spec.bf16_flops / 1e12:.0f} TFLOP/s")
    if out:
        out.write_text(json.dumps({"device": spec.name if spec else str(device), "rows": rows}, indent=1))


@dataclass(frozen=True)
class BenchRow:
    """One measured workload with the work it does (FLOPs, bytes) for floor and throughput columns."""

    name: str
    seconds: float
    flops: float = 0.0
    bytes_moved: float = 0.0
    reference_seconds: float | None = None  # the official implementation, measured in the same run

    def floor(self, spec: DeviceSpec | None) -> float | None:
        if spec is None or (self.flops == 0 and self.bytes_moved == 0):
            return None
        return floor_seconds(spec=spec, flops=self.flops, bytes_moved=self.bytes_moved)


def format_table(rows: Sequence[BenchRow], *, spec: DeviceSpec | None = None) -> str:
    """A markdown table: time, floor and % of floor, TFLOP/s, GB/s, and the reference time if measured."""
    header = "| workload | time (ms) | floor (ms) | % of floor | TFLOP/s | GB/s | reference (ms) |"
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        floor = row.floor(spec)
        cells = [
            row.name,
            f"{row.seconds * 1e3:.3f}",
            f"{floor * 1e3:.3f}" if floor is not None else "-",
            f"{100 * floor / row.seconds:.1f}" if floor is not None and row.seconds > 0 else "-",
            f"{row.flops / row.seconds / 1e12:.1f}" if row.flops and row.seconds > 0 else "-",
            f"{row.bytes_moved / row.seconds / 1e9:.1f}" if row.bytes_moved and row.seconds > 0 else "-",
            f"{row.reference_seconds * 1e3:.3f}" if row.reference_seconds is not None else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if spec is None:
        device = "device: no known peak (floor not shown)"
    else:
        device = (
            f"device: {spec.name} (bf16 peak {spec.bf16_flops / 1e12:.0f} TFLOP/s, "
            f"{spec.memory_bandwidth / 1e12:.2f} TB/s)"
        )
    return "\n".join(lines) + "\n\n" + device


@dataclass(frozen=True)
class Work:
    """What one generation call of a batch must do at least: FLOPs and bytes through device memory. For AR
    decoding `bytes_moved` counts each step's weight and KV-cache reads; for bidirectional passes the FLOPs."""

    flops: float = 0.0
    bytes_moved: float = 0.0


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the weights a forward reads once each: parameters and persistent buffers (int8 weights,
    their scales). Non-persistent buffers (KV caches, RoPE tables) are left out: a decode step reads only the
    filled part of a cache and one row of a table, which a floor counts separately."""
    tensors = {id(t): t for t in module.parameters()}
    for sub in module.modules():
        for name, buffer in sub._buffers.items():
            if buffer is not None and name not in sub._non_persistent_buffers_set:
                tensors[id(buffer)] = buffer
    return sum(t.numel() * t.element_size() for t in tensors.values())


def linear_weight_count(module: torch.nn.Module) -> int:
    """Weights of the matrix products (nn.Linear, incl. int8 ones): 2 FLOPs each per token."""
    return sum(m.in_features * m.out_features for m in module.modules() if hasattr(m, "in_features"))


def transformer_flops(model: torch.nn.Module, *, rows: int, queries: int, keys: int) -> float:
    """Matrix FLOPs of one pass of a core `Transformer` (or any module with `.config` and linears): the
    projections (2 per weight per token) plus attention scores and values (4 * keys * width per query)."""
    config = model.config
    width = config.n_heads * config.head_size
    projections = 2.0 * linear_weight_count(model) * rows * queries
    attention = 4.0 * config.n_layers * width * rows * queries * keys
    return projections + attention


@dataclass
class BenchTarget:
    """A preset's generation, prepared for timing. `run(batch)` generates `batch` samples (and synchronises
    nothing itself); `work(batch)` estimates the minimum work, for the floor; `units_per_sample` converts
    samples into the unit users count (tokens, frames, seconds of audio, forecast points)."""

    name: str
    run: Callable[[int], object]
    work: Callable[[int], Work]
    sample_unit: str = "sample"
    unit: str = "token"
    units_per_sample: float = 1.0


@dataclass(frozen=True)
class BenchResult:
    batch: int
    seconds: float
    peak_memory_bytes: int | None
    floor: float | None

    @property
    def fraction_of_floor(self) -> float | None:
        return None if self.floor is None or self.seconds <= 0 else self.floor / self.seconds


def run_bench(
    target: BenchTarget,
    batches: Sequence[int],
    *,
    spec: DeviceSpec | None,
    device: torch.device | str,
    warmup: int = 2,
    iters: int = 5,
) -> list[BenchResult]:
    """Median seconds per generation call at each batch size, peak device memory, and the floor."""
    device = torch.device(device)
    results = []
    for batch in batches:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        timing = measure(lambda b=batch: target.run(b), warmup=warmup, iters=iters, device=device)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        work = target.work(batch)
        floor = None
        if spec is not None and (work.flops or work.bytes_moved):
            floor = floor_seconds(spec=spec, flops=work.flops, bytes_moved=work.bytes_moved)
        results.append(BenchResult(batch, timing.median, peak, floor))
    return results


def format_bench(target: BenchTarget, results: Sequence[BenchResult], *, spec: DeviceSpec | None) -> str:
    """Markdown table of a `run_bench`: per batch size, time per call and per sample, throughput, memory and
    the fraction of the floor reached."""
    lines = [
        f"| batch | s / call | ms / {target.sample_unit} | {target.sample_unit}s / s | {target.unit}s / s "
        "| peak memory (MiB) | floor (ms) | % of floor |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        per_second = r.batch / r.seconds
        fraction = r.fraction_of_floor
        lines.append(
            f"| {r.batch} | {r.seconds:.4f} | {1e3 * r.seconds / r.batch:.3f} | {per_second:.1f} "
            f"| {per_second * target.units_per_sample:.0f} "
            f"| {'-' if r.peak_memory_bytes is None else f'{r.peak_memory_bytes / 2**20:.0f}'} "
            f"| {'-' if r.floor is None else f'{1e3 * r.floor:.3f}'} "
            f"| {'-' if fraction is None else f'{100 * fraction:.1f}'} |"
        )
    device = (
        "no floor (CPU or ceilings not measured)"
        if spec is None
        else (
            f"{spec.name}: {spec.bf16_flops / 1e12:.0f} TFLOP/s bf16, {spec.memory_bandwidth / 1e9:.0f} GB/s copy"
        )
    )
    return f"{target.name}\n\n" + "\n".join(lines) + f"\n\ndevice: {device}"


__all__ = [
    "BenchResult",
    "BenchTarget",
    "Work",
    "format_bench",
    "linear_weight_count",
    "transformer_flops",
    "weight_bytes",
    "measure_ceilings",
    "run_bench",
    "KNOWN_DEVICES",
    "BenchRow",
    "DeviceSpec",
    "Timing",
    "device_spec",
    "floor_seconds",
    "format_table",
    "measure",
]
