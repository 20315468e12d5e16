"""Which launch config of `decode_attention` is fastest over a whole generation? One H100 call, a table.

    python benchmarks/decode_attention_sweep.py [--device cuda] [--replays 20] [--out sweep.json]

Why: in LlamaGen-B's compiled generate (batch 1 with CFG, 256 steps) the kernel averaged 6.45 us a call
(session 10 profile, 64 cache slots per loop step, 4 warps, one program per row and head: 24 programs) while
the other kernels of a layer take 4-5 us: its loop over the filled slots is sequential per program. Each
candidate (slots per loop step x warps) runs as one CUDA graph of a whole generation's calls, positions
0..S-1 (the position read from the device, as in the decode loop), with the rotation inside (`rope`) as
`Attention` runs it; the table gives the mean us per call over the generation (median of the replays), and
the current default for reference. Shapes: LlamaGen-B / -XL (2 rows, 12 / 20 heads of 64, 256 slots) and a
text AR decoder (1 row, 4 heads of 64, 64 slots). `--device cpu` checks the script (no timing).
"""

from __future__ import annotations

import argparse
import json

import torch

from genloom.core.bench import graph_time
from genloom.core.nn import decode_attention as da
from genloom.core.nn.rope import rope_1d

SHAPES = {  # name: (rows, heads, kv heads, head dim, slots)
    "llamagen_b": (2, 12, 12, 64, 256),
    "llamagen_xl": (2, 20, 20, 64, 256),
    "text_ar": (1, 4, 4, 64, 64),
}
BLOCKS = (16, 32, 64, 128, 256)
WARPS = (1, 2, 4, 8)


def generation(shape: tuple[int, ...], device: torch.device, block_n: int, warps: int):  # noqa: ANN201
    """A function running every step of one generation (positions 0..S-1) with this config."""
    rows, heads, kv_heads, dim, slots = shape
    g = torch.Generator().manual_seed(0)

    def rand(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=g).to(device=device, dtype=torch.bfloat16)

    q, k, v = rand(rows, heads, 1, dim), rand(rows, kv_heads, 1, dim), rand(rows, kv_heads, 1, dim)
    k_cache, v_cache = rand(rows, kv_heads, slots, dim), rand(rows, kv_heads, slots, dim)
    cos, sin = (t.to(device) for t in rope_1d(slots, dim))
    positions = torch.arange(slots, device=device)

    def run() -> torch.Tensor:
        out = q
        for pos in range(slots):
            rope = (cos[pos : pos + 1], sin[pos : pos + 1])
            out = da.decode_attention_triton(
                q, k, v, k_cache, v_cache, positions[pos : pos + 1], 0.125, rope, "interleaved",
                block_n=block_n, num_warps=warps,
            )  # fmt: skip
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    results: dict[str, dict[str, float]] = {}
    for name, shape in SHAPES.items():
        results[name] = {}
        for block_n in BLOCKS:
            for warps in WARPS:
                if block_n * shape[3] // (32 * warps) > 256:  # > 256 key elements a thread: spills
                    continue
                run = generation(shape, device, block_n, warps)
                if device.type != "cuda":
                    continue
                try:
                    results[name][f"{block_n}x{warps}"] = (
                        graph_time(run, device, args.replays) * 1e6 / shape[4]
                    )
                except Exception as exc:  # noqa: BLE001 - a config that fails to compile is skipped
                    print(f"{name} {block_n}x{warps}: {type(exc).__name__}", flush=True)
        if not results[name]:
            continue
        default_config = f"{da.cache_block(shape[4])}x{da.NUM_WARPS}"
        default = results[name].get(default_config, float("nan"))
        ranked = sorted(results[name].items(), key=lambda item: item[1])
        print(f"\n{name} {shape}: default {default_config} {default:.2f} us a call", flush=True)
        print("| slots a step x warps | us a call (mean over the generation) | / default |\n|---|---:|---:|")
        for config, us in ranked[:8]:
            print(f"| {config} | {us:.2f} | {us / default:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
