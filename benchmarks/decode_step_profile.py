"""Where does a compiled LlamaGen-B decode step spend its time? Variants of one step, timed as CUDA graphs.

    python benchmarks/decode_step_profile.py --device cuda [--size B|XL] [--batch 1] [--variants a,b] [--kernels FILE]

The step was measured at 537 us (LlamaGen-B, batch 1, CFG: 2 rows, H100) where the weights need 75 us: 162
kernels, of which 60 GEMVs (256 us), 12 cuDNN attention calls plus 24 mask-preparation kernels (104 us), a
`torch.topk` of 2000 over 16,384 logits with its sort (83 us) and ~60 small fused kernels. Each variant
below changes one thing and is timed the same way (the step compiled, captured as one CUDA graph, median
over replays):

- `full`: the step as `CompiledDecoder` runs it (SwiGLU gate fused, top-k by radix select, SDPA attention
  under the boolean cache mask);
- `unfused_gate`: SwiGLU's w1 and w3 as two GEMMs;
- `topk_sort`: top-k through `torch.topk` and a gather (the sampler's path when top-p follows top-k);
- `reduce_attention`: one-query attention as fused reductions instead of SDPA;
- `float_mask`: the cache mask handed to SDPA as an additive float bias computed once per step;
- `no_topk`: plain Gumbel-argmax sampling over the full vocabulary;
- `blocks_only`: the transformer blocks alone (no head, no sampling): the floor of the layer stack;
- `matmuls_only`: the step's weight products alone (one GEMV per linear), the bandwidth-bound part;
- `gemv_reduce`: every weight product of at most 16 rows written as a broadcast multiply and a float32 sum
  (`F.linear` patched), so inductor emits it as its own reduction kernel, with the producer's pointwise work
  (norm scaling, residual adds) fused into its loads, instead of a cuBLAS GEMV of ~4.4 us minimum;
- `autotune`: `full` compiled with inductor's max-autotune (Triton GEMM templates benchmarked against cuBLAS
  per shape, the fastest kept; epilogues fused into Triton GEMMs where they win);
- `autotune_triton`: max-autotune with Triton GEMMs only (no cuBLAS) and coordinate-descent tuning of every
  generated kernel's launch parameters;
- `full` runs the decode paths core now takes for a step of a few rows: the weight products as
  `genloom.core.nn.decode_kernels` (norms, residual adds and SiLU-multiply fused in: 4 kernels a layer,
  `Block.fused_decode_kernels`) and the attention as `genloom.core.nn.decode_attention` (the cache write and
  the attention over the filled slots in one kernel, `Transformer.one_query_kernel`); `modules` switches both
  off (the step as sessions 1-8 ran it), `attention_kernel_only` / `decode_kernels_only` one of them. Each
  variant's logits are compared with `full`'s before timing (the max relative error is printed);
- `fused_matmuls_only`: the same weights as `matmuls_only` through the decode kernels the fused step
  launches (per layer norm + qkv, output projection + residual, norm + gate/up with w1 and w3 as one kernel,
  down projection + residual; the head as norm + product): 4 per layer + 1 kernels, no other work.

The profiler's per-kernel table (`--kernels FILE`, one `full` step outside the graph) is taken after every
timing: once CUPTI has been active, later graph replays run slower.
`--kernels FILE` writes the profiler's per-kernel table of one `full` step run outside the graph (the
kernel count per layer is what a CUDA graph cannot hide).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator

import torch

from genloom.core.bench import graph_time
from genloom.core.nn import attention as attention_module
from genloom.core.nn import decode_kernels
from genloom.core.nn.block import Block
from genloom.core.nn.transformer import Transformer
from genloom.core.sampling.logits import SamplingParams, sample_with_noise
from genloom.image.models.raster_ar import RasterAR
from genloom.image.official_sizes import LLAMAGEN_SIZES, random_llamagen

SIZES = {"B": LLAMAGEN_SIZES["llamagen-b"], "XL": LLAMAGEN_SIZES["llamagen-xl"], "tiny": (64, 2, 4)}


def build(size: str, device: torch.device, dtype: torch.dtype) -> RasterAR:
    torch.manual_seed(0)
    grid, vocab = ((4, 4), 512) if size == "tiny" else ((16, 16), 16384)
    return random_llamagen(*SIZES[size], grid=grid, vocab_size=vocab).to(device, dtype).eval()


def write_kernel_table(fn, path: str) -> None:  # noqa: ANN001
    """The CUDA kernels of one call of `fn` (outside any graph): count and time per kernel name."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=60)
    with open(path, "w") as out:
        out.write(f"{len(kernels)} kernels in one step\n{table}\n")
    print(f"{len(kernels)} CUDA kernels in one full step (table in {path})")


SDPA_ATTEND = attention_module.Attention._attend


def reduction_attend(self, q, k, v, *, mask, is_causal, block_mask):  # noqa: ANN001, ANN202
    """`Attention._attend` with one-query calls computed by `single_query_attention` (fused reductions)."""
    if q.shape[-2] != 1 or block_mask is not None:
        return SDPA_ATTEND(self, q, k, v, mask=mask, is_causal=is_causal, block_mask=block_mask)
    return attention_module.single_query_attention(q, k, v, mask, self.scale)


F_LINEAR = torch.nn.functional.linear


def reduction_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear` for a few rows as multiply + float32 sum (a reduction inductor can fuse its inputs into)."""
    if x.numel() // x.shape[-1] > 16:
        return F_LINEAR(x, weight, bias)
    y = (x.unsqueeze(-2).float() * weight.float()).sum(-1)
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def float_mask_plan(plan, dtype: torch.dtype):  # noqa: ANN001, ANN201
    """`Transformer._plan_attention` returning its boolean mask as an additive bias (0 / -inf)."""

    def planned(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        mask, is_causal, block_mask = plan(self, *args, **kwargs)
        if mask is not None:
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
        return mask, is_causal, block_mask

    return planned


@contextlib.contextmanager
def patched(owner: object, name: str, value: object) -> Iterator[None]:
    """`owner.name = value` inside the block, the original restored after it (also on errors)."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


BF16_TOLERANCE = 2e-2  # a variant's logits against full's: max |difference| / max |logit|

# the decode paths a variant switches off: (class, attribute) -> value
VARIANT_SWITCHES = {
    "modules": {(Block, "fused_decode_kernels"): False, (Transformer, "one_query_kernel"): False},
    "attention_kernel_only": {(Block, "fused_decode_kernels"): False},
    "decode_kernels_only": {(Transformer, "one_query_kernel"): False},
    "five_kernels": {(Block, "fused_decode_layer"): False},  # the session-10 step: no `decode_layer`
}


@contextlib.contextmanager
def variant_patches(name: str) -> Iterator[None]:
    """The switches of variant `name` (none for `full`), restored afterwards."""
    with contextlib.ExitStack() as stack:
        for (owner, attribute), value in VARIANT_SWITCHES.get(name, {}).items():
            stack.enter_context(patched(owner, attribute, value))
        yield


def fused_products(transformer: Transformer, rows: int) -> Callable[[], list[torch.Tensor]]:
    """Every weight product of the fused step through the decode kernels, on random inputs (gate fused)."""
    weight = transformer.output.weight
    calls = []

    def rand(size: int) -> torch.Tensor:
        return torch.randn(rows, size, device=weight.device, dtype=weight.dtype)

    kernels = decode_kernels
    for layer in transformer.layers:
        attn, mlp = layer.attn, layer.mlp
        x, heads, hidden = rand(attn.wo.out_features), rand(attn.wo.in_features), rand(mlp.w2.in_features)
        norm, mlp_norm = layer.attn_norm, layer.mlp_norm
        calls += [
            lambda x=x, n=norm, w=attn.wqkv.weight: kernels.rms_norm_linear(x, n.weight, n.eps, w),
            lambda h=heads, x=x, w=attn.wo.weight: kernels.linear_residual(h, w, x),
            lambda x=x, n=mlp_norm, w=mlp.w13.weight: kernels.rms_norm_swiglu(x, n.weight, n.eps, w),
            lambda h=hidden, x=x, w=mlp.w2.weight: kernels.linear_residual(h, w, x),
        ]
    x, norm = rand(weight.shape[1]), transformer.norm
    calls.append(lambda x=x, n=norm: kernels.rms_norm_linear(x, n.weight, n.eps, weight))
    return lambda: [call() for call in calls]


def check_logits(
    transformer: Transformer, token: torch.Tensor, pos: torch.Tensor, compile_, name: str
) -> None:  # noqa: ANN001
    """Print the max relative error of variant `name`'s step logits (eager and compiled) against the eager
    `full` step's (same token and position: the cache writes are the same)."""

    def logits() -> torch.Tensor:
        return transformer(token, input_pos=pos)[:, -1].float()

    full = logits()
    with variant_patches(name):
        torch._dynamo.reset()
        outputs = {"eager": logits(), "compiled": compile_(logits)()}
    scale = full.abs().max()
    for how, other in outputs.items():
        error = ((other - full).abs().max() / scale).item()
        verdict = "within" if error < BF16_TOLERANCE else "ABOVE"
        print(f"{name} logits ({how}) vs full: max rel err {error:.2e}, {verdict} {BF16_TOLERANCE:g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="B", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--kernels", default=None, help="write the per-kernel profile of `full` here")
    parser.add_argument("--variants", default=None, help="comma-separated subset of the variants to time")
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

    def step(params: SamplingParams, noise: torch.Tensor) -> torch.Tensor:
        logits = transformer(token, input_pos=pos)[:, -1].float()
        cond, uncond = logits.chunk(2)
        return sample_with_noise(uncond + 4.0 * (cond - uncond), params, noise)

    linears = [m for m in transformer.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {id(m): torch.randn(rows, m.in_features, device=device, dtype=dtype) for m in linears}
    on_cuda = device.type == "cuda"
    compile_ = (lambda f: torch.compile(f, dynamic=False)) if on_cuda else (lambda f: f)
    autotune_options = {"max_autotune": True, "triton.cudagraphs": False}
    triton_options = {
        **autotune_options,
        "max_autotune_gemm_backends": "TRITON",
        "coordinate_descent_tuning": True,
    }
    sorted_top_k = SamplingParams(top_k=top_k.top_k, top_p=1.0)  # top-p 1 keeps the topk + gather path
    noise_v = torch.rand(args.batch, model.vocab_size, device=device).log().neg().log()
    noise_k = torch.rand(args.batch, top_k.top_k, device=device).log().neg().log()
    results = {}

    wanted = None if args.variants is None else set(args.variants.split(","))

    def timed(name: str, fn, options: dict | None = None) -> None:  # noqa: ANN001
        if wanted is not None and name not in wanted:
            return
        torch._dynamo.reset()
        compiled = torch.compile(fn, dynamic=False, options=options) if options and on_cuda else compile_(fn)
        results[name] = graph_time(compiled, device)

    with torch.no_grad():
        timed("unfused_gate", lambda: step(top_k, noise_v))
        if wanted is None or "matmuls_only" in wanted:
            results["matmuls_only"] = graph_time(lambda: [m(inputs[id(m)]) for m in linears], device)
        transformer.fuse_projections()
        timed("full", lambda: step(top_k, noise_v))
        for name in VARIANT_SWITCHES:
            if wanted is None or name in wanted:
                check_logits(transformer, token, pos, compile_, name)
            with variant_patches(name):
                timed(name, lambda: step(top_k, noise_v))
        if wanted is None or "fused_matmuls_only" in wanted:
            results["fused_matmuls_only"] = graph_time(fused_products(transformer, rows), device)
        timed("topk_sort", lambda: step(sorted_top_k, noise_k))
        attention_module.Attention._attend = reduction_attend
        timed("reduce_attention", lambda: step(top_k, noise_v))
        attention_module.Attention._attend = SDPA_ATTEND
        plan = Transformer._plan_attention
        Transformer._plan_attention = float_mask_plan(plan, dtype)
        timed("float_mask", lambda: step(top_k, noise_v))
        Transformer._plan_attention = plan
        torch.nn.functional.linear = reduction_linear
        timed("gemv_reduce", lambda: step(top_k, noise_v))
        torch.nn.functional.linear = F_LINEAR
        timed("no_topk", lambda: step(plain, noise_v))
        timed("blocks_only", lambda: transformer.features(token, input_pos=pos))
        timed("autotune", lambda: step(top_k, noise_v), autotune_options)
        timed("autotune_triton", lambda: step(top_k, noise_v), triton_options)
        if args.kernels and on_cuda:
            torch._dynamo.reset()
            write_kernel_table(compile_(lambda: step(top_k, noise_v)), args.kernels)
    weights = sum(p.numel() * p.element_size() for p in transformer.parameters())
    print(f"LlamaGen-{args.size}, {rows} rows, weights {weights / 1e6:.0f} MB")
    print("| variant | us per step |\n| --- | ---: |")
    for name, seconds in results.items():
        print(f"| {name} | {seconds * 1e6:.1f} |")


if __name__ == "__main__":
    main()
