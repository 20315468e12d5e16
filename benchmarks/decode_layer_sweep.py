"""A decode step's layers as one persistent kernel each (`decode_layer`) against five kernels each, on the GPU.

    python benchmarks/decode_layer_sweep.py [--device cuda] [--sizes B XL] [--rows 2] [--replays 30] \
        [--layer-configs N] [--breakdown]

Why: a LlamaGen-B step ran five kernels a layer at 4-6 us each (~24 us a layer against ~4.7 us of weight
bytes at the copy bandwidth, docs/benchmarks.md session 10). For each size, all the layers of a step (12 for
B, 36 for XL: 168 MB / 1.4 GB of bf16 weights, more than the H100's 50 MB L2, so weights come from DRAM as
in the decode loop) run as one CUDA graph, at a mid-generation position (128 of 256 cache slots filled):
- `five_kernels`: `rms_norm_linear` (norm + qkv), `decode_attention` (RoPE, cache write, attention),
  `linear_residual` (output projection), `rms_norm_swiglu`, `linear_residual` (down): the session-10 path;
- `layer` with a config: one `decode_layer` launch per layer (TILE_ELEMENTS weights a chunk, NUM_WARPS).
The table: us per layer (median of the replays), the weight-bandwidth floor per layer (its bf16 weights over
the measured copy bandwidth), the ratio; and each variant's output against the five kernels' (bf16).
`--device cpu` checks the script on tiny sizes (no timing worth reading).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from genloom.core.bench import graph_time, measure_ceilings
from genloom.core.nn import decode_attention as da
from genloom.core.nn import decode_kernels as dk
from genloom.core.nn import decode_layer as dl
from genloom.core.nn.rope import rope_1d

SIZES = {  # name: (layers, dim, heads, hidden)
    "B": (12, 768, 12, 2048),
    "XL": (36, 1280, 20, 3584),
    "tiny": (2, 256, 4, 96),
}
CONFIGS = ((8192, 8), (4096, 8), (16384, 8), (8192, 4), (4096, 4))  # (TILE_ELEMENTS, NUM_WARPS)
SLOTS, POSITION, HEAD_DIM = 256, 128, 64


def layers(size: str, rows: int, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """Random layers of `size`: weights (WEIGHT_ORDER), caches, the input and barrier counters."""
    count, dim, heads, hidden = SIZES[size]
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale + shift).to(device=device, dtype=dtype)

    out = []
    for _ in range(count):
        weights = (
            rand(dim, scale=0.1, shift=1.0),
            rand(3 * dim, dim, scale=dim**-0.5),
            rand(dim, dim, scale=dim**-0.5),
            rand(dim, scale=0.1, shift=1.0),
            rand(2 * hidden, dim, scale=dim**-0.5),
            rand(dim, hidden, scale=hidden**-0.5),
        )
        caches = rand(rows, heads, SLOTS, HEAD_DIM), rand(rows, heads, SLOTS, HEAD_DIM)
        sync = torch.zeros(2, dtype=torch.int32, device=device)
        out.append({"weights": weights, "caches": caches, "sync": sync, "heads": heads})
    return out


def five_kernels(layer: dict, x: torch.Tensor, pos: torch.Tensor, rope: tuple) -> torch.Tensor:
    """The session-10 decode path of one layer: four decode kernels and `decode_attention`."""
    attn_norm, wqkv, wo, mlp_norm, w13, w2 = layer["weights"]
    rows, heads = x.shape[0], layer["heads"]
    qkv = dk.rms_norm_linear(x, attn_norm, 1e-5, wqkv)
    q, k, v = (t.view(rows, 1, heads, HEAD_DIM).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    out = da.decode_attention(q, k, v, *layer["caches"], pos, HEAD_DIM**-0.5, rope, "interleaved")
    h = dk.linear_residual(out.transpose(1, 2).reshape(rows, 1, -1), wo, x)
    return dk.linear_residual(dk.rms_norm_swiglu(h, mlp_norm, 1e-5, w13), w2, h)


def one_kernel(layer: dict, x: torch.Tensor, pos: torch.Tensor, rope: tuple) -> torch.Tensor:
    return dl.decode_layer(
        x, layer["weights"], *layer["caches"], pos, rope, layer["sync"], eps=(1e-5, 1e-5), scale=HEAD_DIM**-0.5,
        n_heads=layer["heads"], rope_layout="interleaved",
    )  # fmt: skip


def step(stack: list[dict], run: Callable, x: torch.Tensor, pos: torch.Tensor, rope: tuple) -> torch.Tensor:
    for layer in stack:
        x = run(layer, x, pos, rope)
    return x


def breakdown(size: str, rows: int, device: torch.device, replays: int) -> None:
    """Where a fused launch's time goes: each stage launched alone (no barrier), four grid barriers alone
    (both polling forms), an empty launch of the same grid; us per layer over the stack."""
    import triton
    import triton.language as tl

    @triton.jit
    def barriers_only(sync, POLL: tl.constexpr):
        for b in tl.static_range(4):
            dl._arrive(sync)
            dl._wait(sync, (b + 1) * tl.num_programs(0), POLL)
        dl._leave(sync)

    @triton.jit
    def empty(sync):
        pass

    stack = layers(size, rows, device, torch.bfloat16)
    x = torch.randn(rows, 1, SIZES[size][1], device=device, dtype=torch.bfloat16)
    pos = torch.tensor([POSITION], device=device)
    cos, sin = (t.to(device) for t in rope_1d(SLOTS, HEAD_DIM))
    programs = dl._programs(device)

    def launch(layer: dict, stage: int) -> torch.Tensor:
        return dl._launch(
            x, layer["weights"], *layer["caches"], pos, cos[POSITION : POSITION + 1], sin[POSITION : POSITION + 1],
            layer["sync"], (1e-5, 1e-5), HEAD_DIM**-0.5, layer["heads"], "interleaved", None, (stage,),
        )  # fmt: skip

    timings = {
        f"stage {stage} alone": lambda s=stage: [launch(layer, s) for layer in stack] for stage in range(1, 6)
    }
    for poll in (0, 1):
        timings[f"4 barriers alone, poll {poll}"] = lambda p=poll: [
            barriers_only[(programs,)](layer["sync"], POLL=p, num_warps=dl.NUM_WARPS) for layer in stack
        ]
    timings["empty launch"] = lambda: [
        empty[(programs,)](layer["sync"], num_warps=dl.NUM_WARPS) for layer in stack
    ]
    print(f"\n| size | {programs} programs x {dl.NUM_WARPS} warps | us per layer |\n| --- | --- | ---: |")
    for name, fn in timings.items():
        print(f"| {size} | {name} | {graph_time(fn, device, replays) * 1e6 / len(stack):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", nargs="+", default=["B", "XL"])
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--replays", type=int, default=30)
    parser.add_argument(
        "--layer-configs", type=int, default=len(CONFIGS), help="decode_layer configs to time"
    )
    parser.add_argument("--breakdown", action="store_true", help="also time the fused launch's parts (CUDA)")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    dtype = torch.bfloat16 if on_cuda else torch.float32
    copy_rate = measure_ceilings(device).memory_bandwidth if on_cuda else None
    print("| size | rows | variant | us per layer | floor us per layer | ratio | max rel diff vs five |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    with torch.no_grad():
        for size in args.sizes if on_cuda else ["tiny"]:
            stack = layers(size, args.rows, device, dtype)
            x = torch.randn(args.rows, 1, SIZES[size][1], device=device, dtype=dtype)
            pos = torch.tensor([POSITION], device=device)
            cos, sin = (t.to(device) for t in rope_1d(SLOTS, HEAD_DIM))
            rope = (cos[POSITION : POSITION + 1], sin[POSITION : POSITION + 1])
            per_layer = sum(w.numel() * w.element_size() for w in stack[0]["weights"])
            floor = per_layer / copy_rate * 1e6 if copy_rate else float("nan")
            reference = step(stack, five_kernels, x, pos, rope).float()
            scale = reference.abs().max()
            configs = CONFIGS[: args.layer_configs]
            variants = [("five_kernels", None)] + [(f"layer {t} x {w} warps", (t, w)) for t, w in configs]
            for name, config in variants:
                if config is not None:
                    dl.TILE_ELEMENTS, dl.NUM_WARPS = config
                run = five_kernels if config is None else one_kernel
                diff = ((step(stack, run, x, pos, rope).float() - reference).abs().max() / scale).item()
                seconds = graph_time(
                    lambda r=run, a=(stack, x, pos, rope): step(a[0], r, *a[1:]), device, args.replays
                )
                us = seconds * 1e6 / len(stack)
                print(
                    f"| {size} | {args.rows} | {name} | {us:.2f} | {floor:.2f} | {us / floor:.2f}x | {diff:.1e} |"
                )
            dl.TILE_ELEMENTS, dl.NUM_WARPS = CONFIGS[0]
        if args.breakdown and on_cuda:
            for size in args.sizes:
                breakdown(size, args.rows, device, args.replays)


if __name__ == "__main__":
    main()
