"""Benchmark helpers: time a function correctly on CPU or CUDA and print it beside its physical floor.

DESIGN.md section 4 asks every benchmark to show its figure next to the floor the hardware allows:
`bytes moved / memory bandwidth` or `FLOPs / peak`, whichever is larger. `measure` times with CUDA events
after warm-up (with a synchronize, so queued kernels are counted), `floor_seconds` computes the floor from
a `DeviceSpec` (datasheet peaks of common GPUs, or your own), and `format_table` renders the rows.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


def floor_seconds(*, spec: DeviceSpec, flops: float = 0.0, bytes_moved: float = 0.0) -> float:
    """The fastest the hardware could possibly do it: max(FLOPs / peak, bytes / bandwidth)."""
    return max(flops / spec.bf16_flops, bytes_moved / spec.memory_bandwidth)


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


__all__ = [
    "KNOWN_DEVICES",
    "BenchRow",
    "DeviceSpec",
    "Timing",
    "device_spec",
    "floor_seconds",
    "format_table",
    "measure",
]
