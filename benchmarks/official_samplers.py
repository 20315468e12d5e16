"""Time the official LlamaGen and VAR samplers, random weights at the official sizes, on one device.

    python benchmarks/official_samplers.py --llamagen-dir .ref/LlamaGen --var-dir .ref/VAR \
        --device cuda --out official.json

This is the reference side of each speed ratio in issue 7. It follows the protocol of the reference figures
in ``shared/bench/official_h100.md``; running it in the same job as genloom's own benchmark puts both sides
on the same GPU in one run. It measures:

- LlamaGen GPT-B class-conditional, 256 tokens (16x16), CFG 4.0 (doubled batch), top-k 2000, bf16, the
  official ``generate`` of ``autoregressive/models/generate.py``: eager, and with the model wrapped in
  ``torch.compile(mode="reduce-overhead", fullgraph=True)`` as its sample script does (a fresh compile
  per batch size, so each one is specialised like the official single-batch sampler), at batch 1 and 8;
- LlamaGen GPT-XL at batch 1: the median time of one decode step (official ``decode_one_token``, CUDA
  events around each of the 255 steps), eager and compiled, and the compiled ``generate`` time;
- VAR-d16 ``autoregressive_infer_cfg`` with CFG 1.5, top-k 900, top-p 0.96 under fp16 autocast and
  ``inference_mode`` as its demo does, the VQVAE decode to 256x256 included, at batch 1 and 64.

Each figure is the median of ``--runs`` timed calls after warm-up, timed from the call to its
synchronised return. The models are built with the official constructors and random weights (the
official GPT init zeroes the output head; it is re-drawn at std 0.02 so the top-k sees distinct logits;
the VQVAE layers that the official builder leaves uninitialised get their PyTorch defaults). Nothing is
downloaded. The official code is not part of genloom: check out FoundationVision/LlamaGen and
FoundationVision/VAR from GitHub (only ``autoregressive/models``, ``utils/drop_path.py`` and VAR's
``models`` and ``dist.py`` are imported) and pass their folders. Besides torch, VAR imports
``huggingface_hub`` (no network use); flash-attn and xformers are optional and used only if present.
``--tiny`` runs every path on toy sizes (fp32 VAR on CPU) to check the script end to end.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

VOCAB = 16384
NUM_CLASSES = 1000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_calls(fn: Callable[[], object], device: torch.device, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _add_path(folder: Path, marker: str) -> None:
    folder = folder.resolve()
    if not (folder / marker).exists():
        raise SystemExit(f"{folder} does not look like the official checkout ({marker} missing)")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


# ---------------------------------------------------------------------------------------------- LlamaGen


def _import_llamagen(folder: Path) -> tuple[types.ModuleType, types.ModuleType]:
    _add_path(folder, "autoregressive/models/gpt.py")
    # LlamaGen's ``utils`` is a folder without __init__.py; a regular package named ``utils`` elsewhere
    # on sys.path would shadow it, so bind the name to the checkout's folder explicitly.
    spec = importlib.util.find_spec("utils")
    utils_dir = str((folder / "utils").resolve())
    if spec is None or utils_dir not in list(spec.submodule_search_locations or []):
        pkg = types.ModuleType("utils")
        pkg.__path__ = [utils_dir]
        sys.modules["utils"] = pkg
    import autoregressive.models.generate as generate_mod
    import autoregressive.models.gpt as gpt_mod

    return gpt_mod, generate_mod


def _build_gpt(gpt_mod: types.ModuleType, size: str, tiny: bool, device: torch.device) -> nn.Module:
    kwargs = dict(vocab_size=VOCAB, num_classes=NUM_CLASSES, cls_token_num=1, model_type="c2i")
    if tiny:
        model = gpt_mod.Transformer(gpt_mod.ModelArgs(n_layer=2, n_head=2, dim=64, block_size=16, **kwargs))
    else:
        model = gpt_mod.GPT_models[size](block_size=256, **kwargs)
    with torch.no_grad():
        model.output.weight.normal_(0.0, 0.02)
    return model.to(device=device, dtype=torch.bfloat16).eval()


def _params_m(model: nn.Module) -> float:
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 1)


def _step_times(
    model: nn.Module, gen: types.ModuleType, batch: int, n_tokens: int, device: torch.device, sampling: dict
) -> list[float]:
    """Per-step times of the official decode loop (prefill, then ``decode_one_token`` n_tokens - 1 times)."""
    cfg = sampling["cfg_scale"]
    kw = {k: v for k, v in sampling.items() if k != "cfg_scale"}
    cond = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    cond_combined = torch.cat([cond, torch.full_like(cond, model.num_classes)])
    with torch.no_grad():
        with torch.device(device):
            model.setup_caches(
                max_batch_size=2 * batch, max_seq_length=1 + n_tokens, dtype=model.tok_embeddings.weight.dtype
            )
        token = gen.prefill(model, cond_combined, torch.arange(0, 1, device=device), cfg, **kw)
        input_pos = torch.tensor([1], device=device, dtype=torch.int)
        times, events = [], []
        for _ in range(n_tokens - 1):
            math_only = torch.backends.cuda.sdp_kernel(
                enable_flash=False, enable_mem_efficient=False, enable_math=True
            )
            with math_only:
                if device.type == "cuda":
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    token, _ = gen.decode_one_token(model, token, input_pos, cfg, True, **kw)
                    end.record()
                    events.append((start, end))
                else:
                    t0 = time.perf_counter()
                    token, _ = gen.decode_one_token(model, token, input_pos, cfg, True, **kw)
                    times.append(time.perf_counter() - t0)
            input_pos += 1
            token = token.clone().view(-1, 1)
        _sync(device)
    return times or [s.elapsed_time(e) / 1e3 for s, e in events]


def run_llamagen(args: argparse.Namespace, device: torch.device) -> dict[str, dict]:
    gpt_mod, gen = _import_llamagen(args.llamagen_dir)
    n_tokens = 16 if args.tiny else 256
    sampling = dict(cfg_scale=4.0, temperature=1.0, top_k=2000, top_p=1.0, sample_logits=True)
    results: dict[str, dict] = {}

    def record(name: str, batch: int, times: list[float], model: nn.Module, **extra: object) -> None:
        key = f"{name}_b{batch}"
        results[key] = {
            "batch": batch,
            "median_s": statistics.median(times),
            "runs_s": times,
            "tokens": n_tokens,
            "params_m": _params_m(model),
            "dtype": "bf16",
            **extra,
        }
        print(f"  {key}: {results[key]['median_s']:.4f} s", flush=True)

    def sample_fn(model: nn.Module, batch: int) -> Callable[[], object]:
        cond = torch.randint(0, NUM_CLASSES, (batch,), device=device)
        sp = dict(sampling)
        cfg = sp.pop("cfg_scale")
        return lambda: gen.generate(model, cond, n_tokens, cfg_scale=cfg, cfg_interval=-1, **sp)

    torch.manual_seed(0)
    base = _build_gpt(gpt_mod, "GPT-B", args.tiny, device)
    for batch in args.llamagen_batches:
        times = _time_calls(sample_fn(base, batch), device, warmup=1, runs=args.runs)
        record("llamagen_gpt_b_eager", batch, times, base)
    for batch in args.llamagen_batches:
        torch._dynamo.reset()
        compiled = torch.compile(base, mode="reduce-overhead", fullgraph=True)
        fn = sample_fn(compiled, batch)
        t0 = time.perf_counter()
        for _ in range(3):  # compile, cudagraph warm-up, cudagraph record
            fn()
        _sync(device)
        warm_s = time.perf_counter() - t0
        graphs = _graph_count()
        times = _time_calls(fn, device, warmup=0, runs=args.runs)
        record(
            "llamagen_gpt_b_compiled",
            batch,
            times,
            base,
            warmup_s=round(warm_s, 1),
            graphs_compiled_while_timing=_graph_count() - graphs,
        )
    del base, compiled

    if not args.no_xl:
        torch._dynamo.reset()
        torch.manual_seed(0)
        xl = _build_gpt(gpt_mod, "GPT-XL", args.tiny, device)
        fn = sample_fn(xl, 1)
        fn()  # warm-up
        steps = _step_times(xl, gen, 1, n_tokens, device, sampling)
        results["llamagen_gpt_xl_eager_step_b1"] = {
            "batch": 1,
            "median_s": statistics.median(steps),
            "steps": len(steps),
            "params_m": _params_m(xl),
            "dtype": "bf16",
        }
        print(f"  llamagen_gpt_xl_eager_step_b1: {statistics.median(steps) * 1e3:.3f} ms", flush=True)
        compiled = torch.compile(xl, mode="reduce-overhead", fullgraph=True)
        fn = sample_fn(compiled, 1)
        times = _time_calls(fn, device, warmup=3, runs=args.runs)
        record("llamagen_gpt_xl_compiled", 1, times, xl)
        steps = _step_times(compiled, gen, 1, n_tokens, device, sampling)
        results["llamagen_gpt_xl_compiled_step_b1"] = {
            "batch": 1,
            "median_s": statistics.median(steps),
            "steps": len(steps),
            "params_m": _params_m(xl),
            "dtype": "bf16",
        }
        print(f"  llamagen_gpt_xl_compiled_step_b1: {statistics.median(steps) * 1e3:.3f} ms", flush=True)
        del xl, compiled
        torch._dynamo.reset()
    return results


# --------------------------------------------------------------------------------------------------- VAR


def _build_var(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, nn.Module]:
    _add_path(args.var_dir, "models/var.py")
    from models import build_vae_var

    # build_vae_var turns reset_parameters into a no-op on these classes for good; undo that afterwards.
    patched = (
        nn.Linear,
        nn.LayerNorm,
        nn.BatchNorm2d,
        nn.SyncBatchNorm,
        nn.Conv1d,
        nn.Conv2d,
        nn.ConvTranspose1d,
        nn.ConvTranspose2d,
    )
    saved = {cls: cls.__dict__.get("reset_parameters") for cls in patched}
    kwargs = dict(V=4096, Cvae=32, share_quant_resi=4, num_classes=NUM_CLASSES, shared_aln=False)
    try:
        if args.tiny:
            vae, var = build_vae_var(device=device, patch_nums=(1, 2, 3, 4), ch=32, depth=2, **kwargs)
        else:
            vae, var = build_vae_var(device=device, ch=160, depth=16, **kwargs)
    finally:
        for cls, fn in saved.items():
            if fn is None:
                if "reset_parameters" in cls.__dict__:
                    delattr(cls, "reset_parameters")
            else:
                cls.reset_parameters = fn
    # VAR.init_weights covers the transformer only; the VQVAE's convs were left as torch.empty.
    with torch.no_grad():
        for m in vae.modules():
            if isinstance(m, patched):
                m.reset_parameters()
    vae.eval()
    var.eval()
    for p in [*vae.parameters(), *var.parameters()]:
        p.requires_grad_(False)
    return vae, var


def run_var(args: argparse.Namespace, device: torch.device) -> dict[str, dict]:
    torch.manual_seed(0)
    vae, var = _build_var(args, device)
    use_fp16 = device.type == "cuda"
    results: dict[str, dict] = {}
    for batch in args.var_batches:
        labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)

        def fn(batch: int = batch, labels: torch.Tensor = labels) -> torch.Tensor:
            amp = torch.autocast(device.type, dtype=torch.float16, enabled=use_fp16, cache_enabled=True)
            with torch.inference_mode(), amp:
                return var.autoregressive_infer_cfg(
                    B=batch, label_B=labels, g_seed=0, cfg=1.5, top_k=900, top_p=0.96, more_smooth=False
                )

        img = fn()
        times = _time_calls(fn, device, warmup=1, runs=args.runs)
        results[f"var_d16_b{batch}"] = {
            "batch": batch,
            "median_s": statistics.median(times),
            "runs_s": times,
            "image": list(img.shape[1:]),
            "params_m": _params_m(var),
            "vae_params_m": _params_m(vae),
            "dtype": "fp16 autocast" if use_fp16 else "fp32",
        }
        print(f"  var_d16_b{batch}: {statistics.median(times):.4f} s", flush=True)
    return results


# -------------------------------------------------------------------------------------------------- main


def _batches(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llamagen-dir", type=Path, default=Path(".ref/LlamaGen"))
    p.add_argument("--var-dir", type=Path, default=Path(".ref/VAR"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--llamagen-batches", type=_batches, default=[1, 8])
    p.add_argument("--var-batches", type=_batches, default=[1, 64])
    p.add_argument("--only", choices=["llamagen", "var"], default=None)
    p.add_argument("--no-xl", action="store_true", help="skip the GPT-XL decode-step timing")
    p.add_argument("--tiny", action="store_true", help="toy sizes, to check the script on CPU")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    # LlamaGen's decode loop uses the deprecated torch.backends.cuda.sdp_kernel on every step.
    warnings.filterwarnings("ignore", message=".*sdp_kernel.*", category=FutureWarning)
    device = torch.device(args.device)
    # As the official sample scripts set them.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    if args.tiny and args.var_batches == [1, 64]:
        args.var_batches = [1, 4]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}", flush=True)

    results: dict[str, dict] = {}
    if args.only in (None, "llamagen"):
        results.update(run_llamagen(args, device))
    if args.only in (None, "var"):
        results.update(run_var(args, device))
    for entry in results.values():
        entry["device"] = name
        entry["torch"] = torch.__version__
        entry["tiny"] = args.tiny

    print("\n| official sampler | batch | median s | runs s |\n|---|---|---|---|")
    for key, entry in results.items():
        runs = ", ".join(f"{t:.4f}" for t in entry.get("runs_s", []))
        print(f"| {key} | {entry['batch']} | {entry['median_s']:.4f} | {runs} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
