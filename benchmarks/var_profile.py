"""Where do VAR-d16's 64 images go? Scale-loop kernels, compiled scale passes, the VQVAE decode's kernels.

    python benchmarks/var_profile.py --device cuda [--batch 64] [--kernels var_kernels.txt]

docs/benchmarks.md measured VAR-d16 (random weights, CFG 1.5, top-k 900, top-p 0.96, bf16) at 329 ms for 64
images on an H100: 190 ms of tokens (29% of the matmul rate) and 141 ms of compiled VQVAE decode. This script
splits both:

- tokens: the graphed scale loop timed as a whole, then one call under the profiler, its CUDA kernels summed
  by name (`--kernels FILE`), and the time in the transformer's graphed passes against everything between
  them (sampling, guidance, the quantizer's per-scale upsampling convs) from CUDA events around each pass;
- tokens again with `compiled=True` (each scale's pass through torch.compile before capture);
- decode: `FastDecode` (compiled, bf16, channels-last) with `torch.backends.cudnn.benchmark` off (cuDNN's
  heuristic algorithm choice, the default) and on (each convolution shape timed once, fastest kept).

The profiler runs last: once CUPTI has been active, later CUDA graph replays are slower.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from genloom.core.bench import measure
from genloom.core.sampling.logits import SamplingParams
from genloom.image.fast_decode import FastDecode
from genloom.image.official_sizes import random_var


def cuda_median(fn, device: torch.device) -> float:  # noqa: ANN001
    """Median seconds of `fn()` over 7 calls after 2 warm-ups (core's `measure`: CUDA events per call)."""
    return measure(fn, warmup=2, iters=7, device=device).median


def pass_time_split(model, labels, quantizer, params, device, compiled) -> tuple[float, float]:  # noqa: ANN001
    """(seconds inside the graphed transformer passes, seconds of the whole loop) for one generate call."""
    spans: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    cls = type(model._scale_graphs)  # GraphCache: both the plain and the compiled passes
    plain_call = cls.__call__

    def timed_call(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = plain_call(self, *args, **kwargs)
        end.record()
        spans.append((start, end))
        return out

    cls.__call__ = timed_call
    try:
        begin, finish = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        begin.record()
        model.generate(labels, quantizer, cfg_scale=1.5, sampling=params, graphed=True, compiled=compiled)
        finish.record()
        finish.synchronize()
    finally:
        cls.__call__ = plain_call
    inside = sum(s.elapsed_time(e) for s, e in spans) / 1e3
    return inside, begin.elapsed_time(finish) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--kernels", default=None, help="write the per-kernel table of one scale loop here")
    parser.add_argument(
        "--decode-variants",
        default="default",
        help="FastDecode variants: default, max-autotune, contiguous, channel-sum-norms, contiguous-channel-sum-norms",
    )
    parser.add_argument(
        "--token-paths", default="graphed,compiled", help="graphed and/or compiled scale passes"
    )
    parser.add_argument(
        "--decode-kernels", default=None, help="write the per-kernel table of one decode here"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, vae = random_var(16)
    model = model.to(device=device, dtype=torch.bfloat16).eval()
    vae = vae.to(device=device).eval()
    params = SamplingParams(top_k=900, top_p=0.96)
    labels = torch.arange(args.batch, device=device) % 1000

    def tokens(compiled: bool = False) -> torch.Tensor:
        return model.generate(
            labels, vae.quantize, cfg_scale=1.5, sampling=params, graphed=True, compiled=compiled
        )

    rows = []
    paths = args.token_paths.split(",")
    for compiled in [c for c, name in ((False, "graphed"), (True, "compiled")) if name in paths]:
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        tokens(compiled)
        torch.cuda.synchronize(device)
        first_s = time.perf_counter() - start
        tokens_s = cuda_median(lambda c=compiled: tokens(c), device)
        inside_s, loop_s = pass_time_split(model, labels, vae.quantize, params, device, compiled)
        how = "compiled + graphed" if compiled else "graphed (eager kernels)"
        rows += [
            (f"tokens, {how}: first call (captures{', compiles' if compiled else ''})", first_s),
            (f"tokens, {how}: whole scale loop", tokens_s),
            (f"tokens, {how}: inside the 10 transformer passes (one call)", inside_s),
            (f"tokens, {how}: between the passes (one call)", loop_s - inside_s),
        ]
    ids = tokens()
    with torch.no_grad():
        f_hat = vae.quantize.indices_to_codes(ids)
        rows.append(("decode: ids -> f_hat (code accumulation, eager)", cuda_median(
            lambda: vae.quantize.indices_to_codes(ids), device)))  # fmt: skip
    variants = {  # FastDecode options per --decode-variants name (each on a fresh copy of the tokenizer)
        "default": {},
        "max-autotune": {"mode": "max-autotune-no-cudagraphs"},
        "contiguous": {"channels_last": False},
        "channel-sum-norms": {"channel_sum_norms": True},
        "contiguous-channel-sum-norms": {"channels_last": False, "channel_sum_norms": True},
    }
    for name in args.decode_variants.split(","):
        torch._dynamo.reset()
        fast_decode = FastDecode.for_tokenizer(copy.deepcopy(vae), **variants[name])
        rows.append(
            (
                f"decode: f_hat -> images, FastDecode {name}",
                cuda_median(lambda d=fast_decode: d(f_hat, prepared=True), device),
            )
        )
    print(
        f"VAR-d16, batch {args.batch}, CFG 1.5, top-k 900, top-p 0.96, bf16, {torch.cuda.get_device_name(device)}"
    )
    print("| part | ms |\n| --- | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e3:.1f} |")
    if args.kernels:
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize(device)
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            tokens("compiled" in paths)
            torch.cuda.synchronize(device)
        with open(args.kernels, "w") as out:
            out.write(
                prof.key_averages().table(sort_by="cuda_time_total", row_limit=50, max_name_column_width=120)
            )
        print(f"kernel table of one scale loop in {args.kernels}")
    fast_decode = FastDecode.for_tokenizer(vae)  # the default, for the kernel table
    fast_decode(f_hat, prepared=True)
    if args.decode_kernels:
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fast_decode(f_hat, prepared=True)
            torch.cuda.synchronize(device)
        with open(args.decode_kernels, "w") as out:
            out.write(
                prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=120)
            )


if __name__ == "__main__":
    main()
