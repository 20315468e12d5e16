"""genloom's GPU inference path at the official model sizes (random weights), beside the physical floor.

    python benchmarks/gpu_inference.py --device cuda --out gpu_inference.json [--official official.json]

Sections (each timed as the median of several calls after warm-up, from the call to its synchronised
return; floors from ceilings measured first on the same GPU: copy bandwidth and bf16 matmul rate):

- raster AR at LlamaGen-B size (111M), class-conditional, 256 tokens, CFG 4.0 (one doubled batch), top-k
  2000, bf16: the eager loop and the compiled decode step (`CompiledDecoder`: the whole step one CUDA graph)
  at batch 1 and 8; the bandwidth floor is 256 steps x (weights + filled KV cache) / copy bandwidth;
- the same with int8 weight-only linears (batch 1), and its quality cost: greedy tokens equal to bf16 and
  the relative logit error of a teacher-forced pass;
- one decode step at LlamaGen-XL size (775M) at batch 1 against its bandwidth floor;
- VAR-d16 (310M) with CFG 1.5, top-k 900, top-p 0.96, bf16, the VQVAE decode to 256x256 included: the eager
  scale loop and the per-scale CUDA graphs, at batch 1 and 64, against the transformer's FLOP floor;
- one bidirectional pass at batch 64 of MaskGIT (24 x 768, 256 tokens), MDLM (OWT-small: 12 x 768, 1024
  tokens), CMLM and DA-Transformer decoders (transformer-base: 6 x 512, 64 source tokens; DA-T graph 8x),
  eager, compiled, and compiled + replayed from a CUDA graph (as the samplers replay them), the last as a
  fraction of the measured matmul rate (FLOPs counted by torch's FlopCounterMode);
- equality: greedy (and seeded sampled) tokens of the fast path against the eager path.

`--official` merges the JSON of `benchmarks/official_samplers.py` taken in the same job, so every ratio
compares two figures from one GPU and one run. `--tiny` shrinks everything to check the script on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from genloom.core.bench import DeviceSpec, measure, measure_ceilings, weight_bytes
from genloom.core.nn.mlp import MLP
from genloom.core.nn.quantize import quantize_int8_weight_only
from genloom.core.sampling.logits import SamplingParams
from genloom.image.bench import next_scale_flops, raster_ar_decode_bytes
from genloom.image.fast_decode import FastDecode
from genloom.image.models.masked_tokens import MaskGIT, MaskGITConfig, maskgit_transformer_config
from genloom.image.models.raster_ar import RasterAR
from genloom.image.official_sizes import LLAMAGEN_SIZES, random_llamagen, random_var
from genloom.image.tokenizers.multiscale_autoencoder import MultiScaleVQAutoencoderConfig
from genloom.text.mdlm import MaskedDiffusionLM, MDLMConfig
from genloom.text.nat import CMLM, DATransformer
from genloom.text.seq2seq import Seq2SeqConfig

RESULTS: dict[str, dict] = {}
START = time.perf_counter()
OUT: list[Path] = []  # where record() keeps the JSON up to date (a killed run keeps what it measured)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, *, warmup: int, runs: int) -> float:
    """Median seconds of `runs` calls after `warmup` (core's `measure`: CUDA events around each call)."""
    return measure(fn, warmup=warmup, iters=runs, device=device).median


def record(name: str, **values: object) -> None:
    RESULTS[name] = values
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"[{time.perf_counter() - START:6.1f}s] {name}: {shown}", flush=True)
    for path in OUT:
        path.write_text(json.dumps(RESULTS, indent=2, default=str))


def budget_left(args: argparse.Namespace) -> bool:
    return time.perf_counter() - START < args.budget_s


# ---------------------------------------------------------------------------------------------- raster AR
LLAMAGEN_SHAPES = {"B": LLAMAGEN_SIZES["llamagen-b"], "XL": LLAMAGEN_SIZES["llamagen-xl"], "tiny": (64, 2, 4)}


def llamagen(size: str, args: argparse.Namespace, device: torch.device) -> RasterAR:
    """LlamaGen GPT of `size` at random init (the official shapes; "tiny" for --tiny checks)."""
    torch.manual_seed(0)
    dim, layers, heads = LLAMAGEN_SHAPES[size]
    grid, vocab = ((4, 4), 512) if args.tiny else ((16, 16), 16384)
    model = random_llamagen(dim, layers, heads, grid=grid, vocab_size=vocab)
    return model.to(device=device, dtype=args.dtype).eval()


def ar_floor(model: RasterAR, batch: int, spec: DeviceSpec | None) -> float | None:
    """Bandwidth floor of one generation with CFG (2 x batch rows)."""
    return None if spec is None else raster_ar_decode_bytes(model, 2 * batch) / spec.memory_bandwidth


def bench_raster_ar(args: argparse.Namespace, device: torch.device, spec: DeviceSpec | None) -> None:
    model = llamagen("tiny" if args.tiny else "B", args, device)
    params = SamplingParams(top_k=50 if args.tiny else 2000)
    compiled = args.backend
    for batch in args.ar_batches:
        labels = torch.arange(batch, device=device) % 1000

        def run(fast: bool | str, labels: torch.Tensor = labels) -> torch.Tensor:
            gen = torch.Generator(device).manual_seed(0)
            return model.generate(labels, cfg_scale=4.0, sampling=params, generator=gen, compiled=fast)

        eager_s = (
            median_time(lambda: run(False), device, warmup=1, runs=args.eager_runs)
            if args.eager_runs
            else None
        )
        fast_s = median_time(lambda: run(compiled), device, warmup=2, runs=args.runs)
        floor = ar_floor(model, batch, spec)
        record(
            f"ours_llamagen_b_b{batch}", batch=batch, eager_s=eager_s, compiled_s=fast_s,
            floor_s=floor or float("nan"), fraction_of_floor=(floor / fast_s) if floor else float("nan"),
        )  # fmt: skip
    labels = torch.arange(8, device=device)
    if not args.tiny:
        equality_on_trained_preset(args, device)
    greedy = SamplingParams(temperature=0.0)
    eager_greedy = model.generate(labels, cfg_scale=4.0, sampling=greedy)
    fast_greedy = model.generate(labels, cfg_scale=4.0, sampling=greedy, compiled=compiled)
    seeded = [
        model.generate(labels, cfg_scale=4.0, sampling=params, generator=torch.Generator(device).manual_seed(3),
                       compiled=mode)
        for mode in (False, compiled)
    ]  # fmt: skip
    first_diff = (eager_greedy != fast_greedy).any(0).nonzero()
    record(
        "equality_llamagen_b_random_weights",
        greedy_equal_fraction=(eager_greedy == fast_greedy).float().mean().item(),
        greedy_first_divergence=int(first_diff[0]) if len(first_diff) else -1,
        sampled_equal_fraction=(seeded[0] == seeded[1]).float().mean().item(),
        teacher_forced_logit_rel_error=logit_error(
            model, compiled_forward(model, args), eager_greedy, labels
        ),
    )
    if budget_left(args):
        bench_int8(model, eager_greedy, labels, args, device, spec)


def equality_on_trained_preset(args: argparse.Namespace, device: torch.device) -> None:
    """Token-for-token equality where argmaxes are not near-ties: the trained ar-digits preset in bf16
    (random weights give almost flat logits, whose argmax flips under any rounding difference)."""
    from genloom.image.cli import resolve_model_folder
    from genloom.image.pipeline import ImagePipeline

    model = (
        ImagePipeline.load(resolve_model_folder("ar-digits"))
        .generator.to(device=device, dtype=args.dtype)
        .eval()
    )
    labels = torch.arange(64, device=device) % 10
    greedy = SamplingParams(temperature=0.0)
    pairs = {
        "greedy": [model.generate(labels, cfg_scale=2.0, sampling=greedy, compiled=mode) for mode in (False, args.backend)],
        "sampled": [
            model.generate(labels, cfg_scale=2.0, sampling=SamplingParams(top_k=64),
                           generator=torch.Generator(device).manual_seed(5), compiled=mode)
            for mode in (False, args.backend)
        ],
    }  # fmt: skip
    record(
        "equality_ar_digits_bf16_b64",
        **{f"{k}_tokens_equal_fraction": (a == b).float().mean().item() for k, (a, b) in pairs.items()},
        **{
            f"{k}_images_identical_fraction": (a == b).all(1).float().mean().item()
            for k, (a, b) in pairs.items()
        },
    )


def compiled_forward(model: RasterAR, args: argparse.Namespace) -> Callable:
    if args.backend == "eager":  # CPU check: no code generation
        return model
    return torch.compile(model, dynamic=False)


def logit_error(model: RasterAR, other: Callable, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        ref = model(labels, tokens[:, :-1]).float()
        out = other(labels, tokens[:, :-1]).float()
    return ((out - ref).norm() / ref.norm()).item()


def bench_int8(model, bf16_greedy, labels, args, device, spec) -> None:  # noqa: ANN001
    reference = llamagen("tiny" if args.tiny else "B", args, device)
    quantize_int8_weight_only(model.transformer, include=lambda name, _: name != "output")
    model._decoders.clear()
    greedy = SamplingParams(temperature=0.0)
    int8_greedy = model.generate(labels, cfg_scale=4.0, sampling=greedy, compiled=args.backend)
    params = SamplingParams(top_k=50 if args.tiny else 2000)
    one = torch.zeros(1, dtype=torch.long, device=device)
    seconds = median_time(
        lambda: model.generate(one, cfg_scale=4.0, sampling=params, compiled=args.backend),
        device,
        warmup=2,
        runs=args.runs,
    )
    floor = ar_floor(model, 1, spec)
    record(
        "ours_llamagen_b_int8_b1", batch=1, compiled_s=seconds, floor_s=floor or float("nan"),
        greedy_tokens_equal_bf16=(int8_greedy == bf16_greedy).float().mean().item(),
        teacher_forced_logit_rel_error_vs_bf16=logit_error(reference, model, bf16_greedy, labels),
        weight_mb=weight_bytes(model.transformer) / 1e6,
    )  # fmt: skip


def bench_xl_step(args: argparse.Namespace, device: torch.device, spec: DeviceSpec | None) -> None:
    model = llamagen("tiny" if args.tiny else "XL", args, device)
    params = SamplingParams(top_k=50 if args.tiny else 2000)
    one = torch.zeros(1, dtype=torch.long, device=device)

    full = median_time(
        lambda: model.generate(one, cfg_scale=4.0, sampling=params, compiled=args.backend),
        device, warmup=2, runs=args.runs,
    )  # fmt: skip
    step = full / model.num_tokens
    floor = None if spec is None else weight_bytes(model.transformer) / spec.memory_bandwidth
    record(
        "ours_llamagen_xl_step_b1", params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        generate_s=full, step_s=step, floor_step_s=floor or float("nan"),
        ratio_to_floor=(step / floor) if floor else float("nan"),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- VAR
def bench_var(args: argparse.Namespace, device: torch.device, spec: DeviceSpec | None) -> None:
    torch.manual_seed(0)
    if args.tiny:
        tokenizer_config = MultiScaleVQAutoencoderConfig(patch_nums=[1, 2, 3], codebook_size=64)
        tokenizer_config.net.ch, tokenizer_config.net.ch_mult = 16, (1, 2)
        model, vae = random_var(2, heads=2, tokenizer_config=tokenizer_config)
    else:
        model, vae = random_var(16)  # VAR-d16 and the release's VQVAE
    model = model.to(device=device, dtype=args.dtype).eval()
    vae = vae.to(device=device).eval()  # fp32 weights, bf16 autocast decode
    vocab = vae.config.codebook_size
    fast_decode = FastDecode.for_tokenizer(vae)  # the graphed path decodes compiled, in bf16
    params = SamplingParams(top_k=min(900, vocab), top_p=0.96)
    compiled = args.backend if args.var_compiled else False  # each scale's pass through torch.compile too
    for batch in args.var_batches:
        labels = torch.arange(batch, device=device) % 1000

        def run(graphed: bool, labels: torch.Tensor = labels) -> torch.Tensor:
            gen = torch.Generator(device).manual_seed(0)
            ids, f_hat = model.generate(
                labels, vae.quantize, cfg_scale=1.5, sampling=params, generator=gen, graphed=graphed,
                compiled=compiled if graphed else False, return_fhat=True,
            )  # fmt: skip
            if graphed:  # the loop's own f_hat, as VAR's sampler decodes it
                return fast_decode(f_hat, prepared=True)
            with torch.no_grad(), torch.autocast(device.type, dtype=args.dtype, enabled=not args.tiny):
                return vae.decode(ids)

        eager_s = (
            median_time(lambda: run(False), device, warmup=1, runs=args.eager_runs)
            if args.eager_runs
            else float("nan")
        )
        fast_s = median_time(lambda: run(True), device, warmup=2, runs=args.runs)

        def fast_tokens(labels: torch.Tensor = labels) -> list[torch.Tensor]:
            return model.generate(
                labels, vae.quantize, cfg_scale=1.5, sampling=params, graphed=True, compiled=compiled
            )

        ids = fast_tokens()
        tokens_s = median_time(fast_tokens, device, warmup=1, runs=args.runs)
        f_hat = vae.quantize.indices_to_codes(ids)

        def decode(ids: torch.Tensor = ids) -> torch.Tensor:
            with torch.no_grad(), torch.autocast(device.type, dtype=args.dtype, enabled=not args.tiny):
                return vae.decode(ids)

        decode_s = median_time(decode, device, warmup=1, runs=args.runs)
        fast_decode_s = median_time(
            lambda f_hat=f_hat: fast_decode(f_hat, prepared=True), device, warmup=2, runs=args.runs
        )  # from f_hat, as the fast path decodes
        same = torch.equal(
            model.generate(labels, vae.quantize, cfg_scale=1.5, sampling=params,
                           generator=torch.Generator(device).manual_seed(1)),
            model.generate(labels, vae.quantize, cfg_scale=1.5, sampling=params,
                           generator=torch.Generator(device).manual_seed(1), graphed=True, compiled=compiled),
        )  # fmt: skip
        flops = next_scale_flops(model, 2 * batch)
        floor = None if spec is None else flops / spec.bf16_flops
        record(
            f"ours_var_d16_b{batch}", batch=batch, eager_s=eager_s, graphed_s=fast_s, tokens_s=tokens_s,
            vqvae_decode_eager_s=decode_s, vqvae_decode_compiled_s=fast_decode_s, transformer_tflop=flops / 1e12,
            floor_s=floor or float("nan"), fraction_of_floor=(floor / fast_s) if floor else float("nan"),
            sampled_tokens_equal_eager=same, scale_passes_compiled=bool(compiled),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------- passes
PASS_SIZES = {  # (MaskGIT dim, layers, heads, tokens), (MDLM vocab, dim, layers, heads, length), (seq2seq vocab, dim, heads)
    "full": ((768, 24, 12, (16, 16)), (50258, 768, 12, 12, 1024), (10000, 512, 8)),
    "tiny": ((64, 2, 4, (4, 4)), (500, 64, 2, 4, 32), (300, 64, 4)),
}


def pass_models(
    args: argparse.Namespace, device: torch.device
) -> dict[str, tuple[torch.nn.Module, Callable]]:
    """The bidirectional families' networks at their usual sizes, each with one pass of batch 64."""
    batch = 8 if args.tiny else 64
    (mg_dim, mg_layers, mg_heads, grid), (vocab, dim, layers, heads, length), (s_vocab, s_dim, s_heads) = (
        PASS_SIZES["tiny" if args.tiny else "full"]
    )
    torch.manual_seed(0)
    tokens_per_image = grid[0] * grid[1]
    mg_cfg = maskgit_transformer_config(
        dim=mg_dim, n_layers=mg_layers, n_heads=mg_heads, codebook_size=1024, num_tokens=tokens_per_image
    )
    maskgit = MaskGIT(MaskGITConfig(transformer=mg_cfg, num_classes=1000, grid=grid))
    mdlm = MaskedDiffusionLM(
        MDLMConfig(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=heads, max_seq_len=length)
    )
    s2s = dict(vocab_size=s_vocab, dim=s_dim, encoder_layers=6, decoder_layers=6, n_heads=s_heads,
               max_source_length=64, max_target_length=64, dropout=0.0)  # fmt: skip
    cmlm = CMLM(Seq2SeqConfig(family="cmlm", **s2s))
    dat = DATransformer(Seq2SeqConfig(family="dat", upsample_ratio=8.0, **s2s))
    image_tokens = torch.randint(0, 1024, (batch, tokens_per_image), device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    text = torch.randint(5, vocab, (batch, length), device=device)
    memory = torch.randn(batch, 64, s_dim, device=device, dtype=args.dtype)
    source_mask = torch.ones(batch, 64, dtype=torch.bool, device=device)

    def decoder_pass(target: int) -> Callable:
        inputs = torch.randn(batch, target, s_dim, device=device, dtype=args.dtype)
        full = torch.full((batch,), target, device=device)
        # the network's pass: logits in the model's dtype (a decoder casts them to float32 inside its own
        # first kernel, compiled with it)
        return lambda m: m.decode_logits(inputs, full, memory, source_mask, float32=False)[0]

    return {
        # the pass as MaskGIT's graphed sampler replays it (`forward` adds range checks: two host reads)
        "maskgit": (maskgit, lambda m: m._logits(labels, image_tokens)),
        "mdlm": (mdlm, lambda m: m.logits(text)),
        "cmlm": (cmlm, decoder_pass(64)),
        "dat": (dat, decoder_pass(8 * 66)),
    }


def bench_passes(args: argparse.Namespace, device: torch.device, spec: DeviceSpec | None) -> None:
    for name, (model, call) in pass_models(args, device).items():
        if args.pass_models and name not in args.pass_models:
            continue
        if not budget_left(args):
            print(f"skipping {name}: time budget spent", flush=True)
            continue
        model = model.to(device=device, dtype=args.dtype).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call(model)
        flops = counter.get_total_flops()
        # the call itself is compiled (a module's torch.compile wrapper compiles only its forward, not the
        # `logits` / `decode_logits` methods the text passes call); "graphed": compiled and replayed from a
        # CUDA graph (mode="reduce-overhead"), as the samplers replay their fixed-shape passes
        compiled = graphed = call
        if args.backend != "eager":
            compiled = torch.compile(call, dynamic=False)
            graphed = torch.compile(call, dynamic=False, mode="reduce-overhead")
        runs = max(args.runs, 10)
        with torch.no_grad():
            seconds = median_time(lambda c=compiled, m=model: c(m), device, warmup=3, runs=runs)
            graphed_seconds = median_time(lambda g=graphed, m=model: g(m), device, warmup=3, runs=runs)
            eager_seconds = median_time(
                lambda c=call, m=model: c(m), device, warmup=1, runs=max(args.runs, 5)
            )
        rate = flops / graphed_seconds
        record(
            f"ours_pass_{name}_b{8 if args.tiny else 64}", tflop=flops / 1e12, compiled_s=seconds,
            graphed_s=graphed_seconds, eager_s=eager_seconds, tflops_per_s=rate / 1e12,
            fraction_of_matmul_rate=(rate / spec.bf16_flops) if spec else float("nan"),
        )  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--official", type=Path, default=None, help="JSON of benchmarks/official_samplers.py")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--eager-runs", type=int, default=1)
    p.add_argument("--ar-batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--var-batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--sections", nargs="+", default=["ar", "var", "xl", "passes"])
    p.add_argument(
        "--budget-s", type=float, default=480.0, help="skip sections once this much time has passed"
    )
    p.add_argument("--tiny", action="store_true")
    p.add_argument(
        "--pass-models", nargs="+", default=None, help="passes section: a subset of maskgit mdlm cmlm dat"
    )
    p.add_argument(
        "--gelu-tanh",
        action="store_true",
        help="passes: exact-GELU layers take the tanh form through cuBLASLt's epilogue (MLP.exact_gelu_as_tanh)",
    )
    p.add_argument(
        "--var-compiled",
        action="store_true",
        help="VAR: each scale's pass compiled before capture (slow first call)",
    )
    args = p.parse_args(argv)
    args.dtype = torch.float32 if args.tiny else torch.bfloat16
    args.backend = (
        "eager" if args.device == "cpu" else True
    )  # RasterAR.generate(compiled=...): True = inductor
    return args


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    MLP.exact_gelu_as_tanh = args.gelu_tanh
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        OUT.append(args.out)
    device = torch.device(args.device)
    spec = measure_ceilings(device) if device.type == "cuda" else None
    if spec is not None:
        record(
            "ceilings",
            device=spec.name,
            copy_gb_s=spec.memory_bandwidth / 1e9,
            bf16_tflop_s=spec.bf16_flops / 1e12,
        )
    sections = {"ar": bench_raster_ar, "var": bench_var, "xl": bench_xl_step, "passes": bench_passes}
    for name in args.sections:
        if not budget_left(args):
            print(f"skipping section {name}: time budget spent", flush=True)
            continue
        try:
            sections[name](args, device, spec)
        except Exception as exc:  # one broken section must not lose the others' figures
            print(f"section {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            RESULTS[f"error_{name}"] = {"error": f"{type(exc).__name__}: {exc}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.official is not None and args.official.is_file():
        RESULTS["official"] = json.loads(args.official.read_text())
    if args.out is not None:
        args.out.write_text(json.dumps(RESULTS, indent=2, default=str))
    return RESULTS


if __name__ == "__main__":
    main()
