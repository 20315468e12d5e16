"""`padded_attention` (one Triton kernel reading one flag per key) against SDPA with the dense mask: a table.

    python benchmarks/padded_attention.py [--device cuda] [--replays 50] [--sweep] [--out table.json]

Shapes are the text models' attention calls under a key-padding mask: DA-Transformer's decoder at batch 64
(self-attention over a 528-vertex graph, cross-attention to 64 source tokens), CMLM's decoder at batch 64, and a
Multi30k translation at batch 1 (a 72-vertex graph, a 16-token source). Each row: our kernel, SDPA compiled
with the dense [B, 1, Lq, Lk] mask (cuDNN on an H100, what the models ran before), flash attention with no mask
at all (the same products without masking: a reference kernel, not a floor), the FLOP floor (the two products
at the bf16 matmul rate measured in the same run), and our time over the floor. Every figure is the median of
CUDA-graph replays (`genloom.core.bench.graph_time`). `--sweep` also times every launch shape (query block, key
block, warps, stages) and prints the five fastest per row; `--device cpu` only checks the script.
"""

from __future__ import annotations

import argparse
import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from genloom.core.bench import finish_kernel_table, graph_time, kernel_row, measure_ceilings
from genloom.core.nn import padded_attention as pa

SHAPES = {  # name: (batch, heads, queries, keys, head dim, a query sees itself)
    "dat_self_b64": (64, 8, 528, 528, 64, True),
    "dat_cross_b64": (64, 8, 528, 64, 64, False),
    "cmlm_self_b64": (64, 8, 64, 64, 64, True),
    "dat_self_b1": (1, 4, 72, 72, 32, True),
    "source_self_b1": (1, 4, 16, 16, 32, True),
}


def inputs(shape: tuple, device: torch.device) -> tuple:
    """q, k, v as `Attention` hands them over ([B, H, L, D] views of [B, L, H, D]) and a key padding whose rows
    keep between half and all of their keys."""
    batch, heads, q_len, k_len, dim, diagonal = shape
    g = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def rand(length: int) -> torch.Tensor:
        return torch.randn(batch, length, heads, dim, generator=g).to(device, dtype).transpose(1, 2)

    kept = torch.randint(k_len // 2, k_len + 1, (batch, 1), generator=g)
    valid = (torch.arange(k_len)[None, :] < kept).to(device)
    return rand(q_len), rand(k_len), rand(k_len), pa.KeyPadding(valid, diagonal)


def launch(q, k, v, padding, block_m: int, block_n: int, warps: int, stages: int) -> torch.Tensor:  # noqa: ANN001
    """The kernel with an explicit launch shape (the sweep)."""
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    batch, q_len, heads, dim = qt.shape
    out = torch.empty_like(qt)
    pa._padded_attention_kernel[(math.ceil(q_len / block_m), batch * heads)](
        qt, kt, vt, padding.valid, out,
        qt.stride(0), qt.stride(2), qt.stride(1), kt.stride(0), kt.stride(2), kt.stride(1),
        vt.stride(0), vt.stride(2), vt.stride(1), out.stride(0), out.stride(2), out.stride(1),
        padding.valid.stride(0), heads, heads // kt.shape[2], q_len, kt.shape[1], dim**-0.5 * math.log2(math.e),
        HEAD_DIM=dim, BLOCK_D=max(16, 1 << (dim - 1).bit_length()), BLOCK_M=block_m, BLOCK_N=block_n,
        SELF_DIAGONAL=padding.self_diagonal, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def sweep(q, k, v, padding, device: torch.device, replays: int) -> list[tuple[str, float]]:  # noqa: ANN001
    """The five fastest launch shapes (us)."""
    times = {}
    for block_m in (16, 32, 64, 128):
        for block_n in (32, 64, 128):
            for warps in (4, 8):
                for stages in (1, 2, 3):
                    call = functools.partial(launch, q, k, v, padding, block_m, block_n, warps, stages)
                    try:
                        times[f"{block_m}/{block_n}/{warps}/{stages}"] = 1e6 * graph_time(
                            call, device, replays
                        )
                    except Exception:  # noqa: BLE001 - a shape Triton cannot fit (shared memory, registers)
                        continue
    return sorted(times.items(), key=lambda item: item[1])[:5]


def times(q, k, v, padding, device: torch.device, replays: int) -> tuple[float, float, float]:  # noqa: ANN001
    """(ours, SDPA compiled with the dense mask, flash attention without a mask) in us."""
    scale = q.shape[-1] ** -0.5
    dense = torch.compile(functools.partial(pa.padded_attention_reference, q, k, v, padding, scale))
    with torch.no_grad():
        ours = graph_time(functools.partial(pa.padded_attention, q, k, v, padding, scale), device, replays)
        sdpa = graph_time(dense, device, replays)
        flash = graph_time(
            functools.partial(F.scaled_dot_product_attention, q, k, v, scale=scale), device, replays
        )
    return 1e6 * ours, 1e6 * sdpa, 1e6 * flash


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--replays", type=int, default=50)
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    spec = measure_ceilings(device) if device.type == "cuda" else None
    rows = []
    print(
        "| attention | ours (us) | SDPA, dense mask (us) | flash, no mask (us) | FLOP floor (us) | ours / floor |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, shape in SHAPES.items():
        q, k, v, padding = inputs(shape, device)
        ours, sdpa, flash = times(q, k, v, padding, device, args.replays)
        batch, heads, q_len, k_len, dim, _ = shape
        flops = 4 * batch * heads * q_len * k_len * dim
        floor = 1e6 * flops / spec.bf16_flops if spec else float("nan")
        row = {
            "name": name,
            "ours_us": ours,
            "sdpa_dense_us": sdpa,
            "flash_no_mask_us": flash,
            "floor_us": floor,
        }
        if args.sweep and device.type == "cuda":
            row["fastest_launches"] = sweep(q, k, v, padding, device, args.replays)
        rows.append(row)
        print(kernel_row(name, ours, (sdpa, flash), floor), flush=True)
    finish_kernel_table(rows, spec, device, args.out)
    return rows


if __name__ == "__main__":
    main()
