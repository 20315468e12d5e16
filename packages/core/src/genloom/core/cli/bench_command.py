"""`genloom bench PRESET`: time a preset's generation at several batch sizes beside the hardware's floor.

Each modality package registers a factory in the entry-point group `genloom.bench`:
`bench_target(name, *, device, dtype, fast, random_weights=False) -> BenchTarget | None` (None: not one of
its generators; `random_weights` asks for an official architecture at random init, e.g. `llamagen-b`). The
command measures the device's ceilings first (copy bandwidth, bf16 matmul rate) so that the floor column is
computed from this GPU as it is today, not from a datasheet.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import torch
import typer

from genloom.core.bench import BenchTarget, format_bench, measure_ceilings, run_bench
from genloom.core.errors import InputError
from genloom.core.io import atomic_write_json

BENCH_GROUP = "genloom.bench"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def find_bench_target(
    name: str, *, device: torch.device, dtype: torch.dtype, fast: bool, random_weights: bool = False
) -> BenchTarget:
    """Ask each installed package for a bench target of the preset `name` (the first that knows it wins)."""
    asked = []
    for ep in sorted(entry_points(group=BENCH_GROUP), key=lambda ep: ep.name):
        asked.append(ep.name)
        target = ep.load()(name, device=device, dtype=dtype, fast=fast, random_weights=random_weights)
        if target is not None:
            return target
    raise InputError(
        f"no installed package can benchmark {name!r} (asked: {', '.join(asked) or 'none'}); "
        "`genloom zoo list` shows the presets, and only generators (not judges or tokenizers) are benchmarked"
    )


def bench_command(
    preset: str = typer.Argument(..., help="a generator preset name (see `genloom zoo list`)"),
    batch: list[int] = typer.Option([1, 8, 64], "--batch", "-b", help="batch sizes (repeat the option)"),
    device: str = typer.Option("cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu"),
    dtype: str = typer.Option("bf16", help="bf16, fp16 or fp32 (CPU runs fp32)"),
    eager: bool = typer.Option(False, "--eager", help="the eager path instead of the compiled / graphed one"),
    random_weights: bool = typer.Option(
        False, "--random-weights", help="an official architecture (llamagen-b, var-d16, ...) at random init"
    ),
    iters: int = typer.Option(5, min=1, help="timed calls per batch size (the median is reported)"),
    warmup: int = typer.Option(2, min=0, help="untimed calls first (compilation happens here)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the results as JSON here"),
) -> None:
    """Time PRESET's generation at each batch size: s per call, samples/s, units/s, peak memory, floor."""
    if dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if any(b < 1 for b in batch):
        raise InputError(f"--batch sizes must be >= 1, got {batch}")
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available")
    torch_dtype = DTYPES[dtype] if torch_device.type == "cuda" else torch.float32
    spec = measure_ceilings(torch_device) if torch_device.type == "cuda" else None
    target = find_bench_target(
        preset, device=torch_device, dtype=torch_dtype, fast=not eager, random_weights=random_weights
    )
    results = run_bench(target, batch, spec=spec, device=torch_device, warmup=warmup, iters=iters)
    path = "eager" if eager or torch_device.type != "cuda" else "compiled"
    print(
        format_bench(target, results, spec=spec)
        + f" | {path} path, {dtype if torch_device.type == 'cuda' else 'fp32'}"
    )
    if json_out is not None:
        rows = [
            {
                "batch": r.batch,
                "seconds": r.seconds,
                "peak_memory_bytes": r.peak_memory_bytes,
                "floor_seconds": r.floor,
            }
            for r in results
        ]
        payload = {
            "preset": preset,
            "target": target.name,
            "path": path,
            "device": spec.name if spec else device,
            "rows": rows,
        }
        atomic_write_json(json_out, payload)
