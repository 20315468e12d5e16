"""Where does a compiled LlamaGen-B decode step spend its time? Variants of one step, timed as CUDA graphs.

    python benchmarks/decode_step_profile.py --device cuda [--size B|XL] [--batch 1]

docs/benchmarks.md measured about 0.7 ms per step at LlamaGen-B size (batch 1, CFG: 2 rows), where the
weights need 75 us, and found the cost growing with the layer count rather than the weight bytes. Each
variant below changes one thing and is timed the same way (the step compiled, captured as one CUDA graph,
median over replays), so the differences point at the culprit:

- `full`: the step as `CompiledDecoder` runs it (masked SDPA over the whole static cache, top-k 2000);
- `no_topk`: plain Gumbel-argmax sampling over the full vocabulary instead of top-k 2000;
- `math_attention`: decode attention written as two matmuls and a softmax (inductor fuses them) instead of
  SDPA with a boolean mask;
- `blocks_only`: the transformer blocks alone (no head, no sampling): the floor of the layer stack;
- `matmuls_only`: the step's weight products alone (one GEMV per linear), the bandwidth-bound part.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from genloom.core.bench import measure
from genloom.core.nn import attention as attention_module
from genloom.core.sampling.logits import SamplingParams, sample_with_noise
from genloom.image.models.raster_ar import RasterAR
from genloom.image.official_sizes import LLAMAGEN_SIZES, random_llamagen

SIZES = {"B": LLAMAGEN_SIZES["llamagen-b"], "XL": LLAMAGEN_SIZES["llamagen-xl"], "tiny": (64, 2, 4)}


def build(size: str, device: torch.device, dtype: torch.dtype) -> RasterAR:
    torch.manual_seed(0)
    grid, vocab = ((4, 4), 512) if size == "tiny" else ((16, 16), 16384)
    return random_llamagen(*SIZES[size], grid=grid, vocab_size=vocab).to(device, dtype).eval()


def graph_time(fn, device: torch.device, replays: int = 50) -> float:  # noqa: ANN001
    """Median seconds of one replay of `fn` captured as a CUDA graph (plain calls off CUDA, to check)."""
    for _ in range(3):
        fn()
    if device.type != "cuda":
        return measure(fn, warmup=0, iters=5, device=device).median
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def math_attend(self, q, k, v, *, mask, is_causal, block_mask):  # noqa: ANN001, ANN202
    """Decode attention as matmul -> masked softmax -> matmul (what inductor can fuse for one query)."""
    if q.shape[-2] != 1 or mask is None:
        return ORIGINAL_ATTEND(self, q, k, v, mask=mask, is_causal=is_causal, block_mask=block_mask)
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)).float() * self.scale
    scores = scores.masked_fill(~mask, float("-inf"))
    return (F.softmax(scores, dim=-1).to(v.dtype)) @ v


ORIGINAL_ATTEND = attention_module.Attention._attend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="B", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build(args.size, device, dtype)
    transformer = model.transformer
    rows = 2 * args.batch
    transformer.setup_cache(rows, model.num_tokens + 1, static=True)
    token = torch.randint(0, model.vocab_size, (rows, 1), device=device)
    pos = torch.tensor([model.num_tokens // 2], device=device)
    top_k = SamplingParams(top_k=min(2000, model.vocab_size - 1))
    plain = SamplingParams()
    noise_k = torch.rand(args.batch, top_k.top_k, device=device).log().neg().log()
    noise_v = torch.rand(args.batch, model.vocab_size, device=device).log().neg().log()

    def step(params: SamplingParams, noise: torch.Tensor) -> torch.Tensor:
        logits = transformer(token, input_pos=pos)[:, -1].float()
        cond, uncond = logits.chunk(2)
        return sample_with_noise(uncond + 4.0 * (cond - uncond), params, noise)

    linears = [m for m in transformer.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {id(m): torch.randn(rows, m.in_features, device=device, dtype=dtype) for m in linears}
    compile_ = (lambda f: torch.compile(f, dynamic=False)) if device.type == "cuda" else (lambda f: f)
    variants = {
        "full": compile_(lambda: step(top_k, noise_k)),
        "no_topk": compile_(lambda: step(plain, noise_v)),
        "blocks_only": compile_(lambda: transformer.features(token, input_pos=pos)),
        "matmuls_only": lambda: [m(inputs[id(m)]) for m in linears],
    }
    results = {}
    with torch.no_grad():
        for name, fn in variants.items():
            results[name] = graph_time(fn, device)
        attention_module.Attention._attend = math_attend
        torch._dynamo.reset()
        results["math_attention"] = graph_time(compile_(lambda: step(top_k, noise_k)), device)
        attention_module.Attention._attend = ORIGINAL_ATTEND
    weights = sum(p.numel() * p.element_size() for p in transformer.parameters())
    print(f"LlamaGen-{args.size}, {rows} rows, weights {weights / 1e6:.0f} MB")
    print("| variant | us per step |\n| --- | ---: |")
    for name, seconds in results.items():
        print(f"| {name} | {seconds * 1e6:.1f} |")


if __name__ == "__main__":
    main()
