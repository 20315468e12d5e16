"""`linear_gelu` (the up-projection and its GELU as one Triton GEMM) against cuBLAS + a GELU kernel: a table.

    python benchmarks/linear_gelu.py [--device cuda] [--replays 50] [--sweep] [--out table.json]

Shapes are the GELU feed-forward layers' up-projections of the bidirectional passes at batch 64 (the
DA-Transformer and CMLM decoders, MaskGIT, MDLM with its tanh GELU) and of a Multi30k translation at batch 1.
Each row: our kernel with `gemm_config`'s launch, the same layer compiled from torch ops (cuBLAS's product
with its bias, then inductor's GELU kernel: what the models ran before), cuBLAS's product alone (no GELU: a
reference, not a floor), the FLOP floor (2 M N K at the bf16 matmul rate measured in the same run) and our
time over it. Every figure is the median of CUDA-graph replays (`genloom.core.bench.graph_time`). `--sweep`
also times a set of launches and prints the five fastest per row; `--device cpu` only checks the script.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from genloom.core.bench import finish_kernel_table, graph_time, kernel_row, measure_ceilings
from genloom.core.nn import linear_gelu as lg

SHAPES = {  # name: (rows, inputs, outputs, GELU approximation)
    "dat_up_b64": (64 * 528, 512, 2048, "none"),
    "cmlm_up_b64": (64 * 64, 512, 2048, "none"),
    "maskgit_up_b64": (64 * 257, 768, 3072, "none"),
    "mdlm_up_b64": (64 * 1024, 768, 3072, "tanh"),
    "dat_up_b1": (72, 128, 512, "none"),
    "source_up_b1": (16, 128, 512, "none"),
}

C = lg.GemmConfig
TMA = {"tma": True}
FLAT = {"tma": True, "flatten": True}
LARGE_LAUNCHES = [  # GemmConfig(block_m, block_n, block_k, group_m, warps, stages, **options)
    C(128, 128, 64, 8, 8, 3),  # pointer loads, one program per tile
    C(128, 256, 64, 8, 8, 4),
    C(128, 128, 64, 8, 8, 3, **FLAT),  # persistent, TMA, tile and K loops flattened
    C(128, 128, 64, 8, 8, 4, **FLAT),
    C(128, 128, 128, 8, 8, 3, **FLAT),
    C(128, 256, 64, 8, 8, 3, **FLAT),
    C(128, 256, 64, 8, 8, 3, **FLAT, epilogue_subtile=True),  # the tile stored as two halves
    C(128, 256, 64, 8, 8, 4, **FLAT, epilogue_subtile=True),
    C(128, 128, 64, 8, 8, 4, **FLAT, epilogue_subtile=True),
    C(128, 128, 64, 8, 8, 3, **TMA),  # loops not flattened
]
SMALL_LAUNCHES = [
    C(64, 64, 64, 1, 4, 3),
    C(128, 64, 64, 1, 4, 3),
    C(16, 32, 128, 1, 2, 2),
    C(64, 32, 64, 1, 4, 3),
    C(64, 64, 64, 1, 4, 3, **FLAT),
    C(128, 64, 64, 1, 4, 3, **FLAT),
    C(64, 32, 64, 1, 4, 3, **FLAT),
    C(64, 64, 128, 1, 4, 2, **TMA),
]


def launch_name(config: lg.GemmConfig) -> str:
    """block_m/n/k/group/warps/stages, then the TMA form's options that are on."""
    name = "/".join(map(str, (config.block_m, config.block_n, config.block_k, config.group_m, config.num_warps,
                              config.num_stages)))  # fmt: skip
    if config.tma:
        name += "/tma" + "".join(
            f"+{flag}"
            for flag, on in (
                ("flat", config.flatten),
                ("sub", config.epilogue_subtile),
            )
            if on
        )
    return name


def inputs(shape: tuple, device: torch.device) -> tuple:
    """x [rows, inputs], weight [outputs, inputs] scaled as a trained layer's, bias [outputs]."""
    rows, k, n, _ = shape
    g = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    x = torch.randn(rows, k, generator=g).to(device, dtype)
    weight = (torch.randn(n, k, generator=g) / k**0.5).to(device, dtype)
    bias = (0.1 * torch.randn(n, generator=g)).to(device, dtype)
    return x, weight, bias


def sweep(x, weight, bias, tanh: bool, device: torch.device, replays: int) -> list[tuple[str, float]]:  # noqa: ANN001
    """The five fastest launches (us) whose outputs match the reference (a launch that Triton miscompiles
    must not win)."""
    want = lg.linear_gelu_reference(x, weight, bias, "tanh" if tanh else "none").float()
    tolerance = 0.02 * want.abs().max().item()
    times = {}
    for config in SMALL_LAUNCHES if x.shape[0] <= 128 else LARGE_LAUNCHES:
        call = functools.partial(lg.linear_gelu_triton, x, weight, bias, tanh, config)
        try:
            error = (call().float() - want).abs().max().item()
            if error > tolerance:
                print(f"  {launch_name(config)}: wrong output (max error {error:.3g})", flush=True)
                continue
            times[launch_name(config)] = 1e6 * graph_time(call, device, replays)
        except Exception as failure:  # noqa: BLE001 - a launch Triton cannot fit (shared memory, registers)
            print(f"  {launch_name(config)}: {type(failure).__name__}", flush=True)
            continue
    return sorted(times.items(), key=lambda item: item[1])[:5]


def times(
    x, weight, bias, approximate: str, device: torch.device, replays: int
) -> tuple[float, float, float, float]:  # noqa: ANN001
    """(ours, cuBLAS + GELU compiled, cuBLAS's product alone, cuBLASLt's product with its tanh-GELU
    epilogue) in us."""
    two_kernels = torch.compile(functools.partial(lg.linear_gelu_reference, x, weight, bias, approximate))
    with torch.no_grad():
        # the op itself: `linear_gelu` takes the torch ops below MIN_ROWS rows
        ours = graph_time(
            functools.partial(lg.fused_linear_gelu, x, weight, bias, approximate == "tanh"), device, replays
        )
        torch_ops = graph_time(two_kernels, device, replays)
        product = graph_time(functools.partial(F.linear, x, weight, bias), device, replays)
        epilogue = graph_time(functools.partial(lg.cublas_gelu_tanh, x, weight, bias), device, replays)
    return 1e6 * ours, 1e6 * torch_ops, 1e6 * product, 1e6 * epilogue


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--replays", type=int, default=50)
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--shapes", nargs="+", default=list(SHAPES))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    spec = measure_ceilings(device) if device.type == "cuda" else None
    rows = []
    print("| up-projection + GELU | ours (us) | cuBLAS + GELU kernel (us) | cuBLAS product alone (us) "
          "| cuBLASLt + tanh-GELU epilogue (us) | FLOP floor (us) | ours / floor |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.shapes:
        shape = SHAPES[name]
        x, weight, bias = inputs(shape, device)
        ours, torch_ops, product, epilogue = times(x, weight, bias, shape[3], device, args.replays)
        floor = 1e6 * 2 * shape[0] * shape[1] * shape[2] / spec.bf16_flops if spec else float("nan")
        row = {
            "name": name,
            "ours_us": ours,
            "torch_ops_us": torch_ops,
            "product_us": product,
            "cublaslt_tanh_epilogue_us": epilogue,
            "floor_us": floor,
        }
        if args.sweep and device.type == "cuda":
            row["fastest_launches"] = sweep(x, weight, bias, shape[3] == "tanh", device, args.replays)
        rows.append(row)
        print(kernel_row(name, ours, (torch_ops, product, epilogue), floor), flush=True)
        if "fastest_launches" in row:
            print(
                f"  fastest (block_m/n/k/group/warps/stages/options: us): {row['fastest_launches']}",
                flush=True,
            )
    finish_kernel_table(rows, spec, device, args.out)
    return rows


if __name__ == "__main__":
    main()
