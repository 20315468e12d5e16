"""Raster AR decoding: plain vs greedy Jacobi vs speculative Jacobi (SJD) vs ZipAR, same classes and seeds.

    .venv/bin/python benchmarks/image_ar_decoding.py --device cuda --n 100 --out ar_decoding.md
    .venv/bin/python benchmarks/image_ar_decoding.py --quick          # a CPU smoke run of every row

Two tables. (1) The shipped `ar-digits` preset (8x8 tokens): forward passes per image (sequential model
calls each image needs; a batch decodes in lockstep), wall time per image, and the shipped judge's class
accuracy of the decoded images, which is the quality each shortcut costs. Jacobi / SJD run unguided (core's
Jacobi loop has no CFG), so every method is measured at cfg 1, and plain / ZipAR again at the preset's cfg.
(2) A LlamaGen-B sized model (768 wide, 12 layers, 16x16 tokens, 16384 codes) with random weights:
forward passes and wall time only. Greedy Jacobi is checked to return exactly the greedy tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.image.accelerated_decoding import jacobi_sample
from genloom.image.models.raster_ar import RasterAR, RasterARConfig, llamagen_transformer_config
from genloom.image.pipeline import ImagePipeline
from genloom.image.presets import load_judge, shipped_preset_dir
from genloom.image.zipar import zipar_sample

Row = tuple[str, int, float, float | None]  # method, passes per image, seconds per image, class accuracy


def _timed(fn: Callable[[], object], device: str) -> tuple[object, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def _methods(
    model: RasterAR, labels: torch.Tensor, args: argparse.Namespace, cfg: float
) -> list[tuple[str, Callable[[], tuple[torch.Tensor, int]]]]:
    """(name, run) pairs; run() returns (tokens (B, h*w), forward passes)."""
    device = labels.device
    greedy, topk = SamplingParams(temperature=0), SamplingParams(top_k=args.top_k)

    def gen() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(args.seed)

    def jacobi(sampling: SamplingParams) -> tuple[torch.Tensor, int]:
        tokens, stats = jacobi_sample(
            model, labels, window=args.jacobi_window, sampling=sampling, generator=gen()
        )
        return tokens, stats.forward_passes

    def zipar(window: int, scale: float) -> Callable[[], tuple[torch.Tensor, int]]:
        def run() -> tuple[torch.Tensor, int]:
            tokens, stats = zipar_sample(
                model, labels, window=window, cfg_scale=scale, sampling=topk, generator=gen()
            )
            return tokens, stats.forward_passes

        return run

    def plain(sampling: SamplingParams, scale: float) -> Callable[[], tuple[torch.Tensor, int]]:
        return lambda: (
            model.generate(labels, cfg_scale=scale, sampling=sampling, generator=gen()),
            model.num_tokens,
        )

    runs = [
        ("plain, greedy", plain(greedy, 1.0)),
        (f"Jacobi (window {args.jacobi_window}), greedy", lambda: jacobi(greedy)),
        (f"plain, top-k {args.top_k}", plain(topk, 1.0)),
        (f"SJD (window {args.jacobi_window}), top-k {args.top_k}", lambda: jacobi(topk)),
        *((f"ZipAR (window {w}), top-k {args.top_k}", zipar(w, 1.0)) for w in args.zipar_windows),
    ]
    if cfg != 1.0:
        runs += [
            (f"plain, top-k {args.top_k}, cfg {cfg:g}", plain(topk, cfg)),
            *(
                (f"ZipAR (window {w}), top-k {args.top_k}, cfg {cfg:g}", zipar(w, cfg))
                for w in args.zipar_windows
            ),
        ]
    return runs


def _measure(
    model: RasterAR,
    labels: torch.Tensor,
    args: argparse.Namespace,
    cfg: float,
    judge: Callable[[torch.Tensor], float] | None,
) -> list[Row]:
    rows: list[Row] = []
    greedy_tokens = None
    for name, run in _methods(model, labels, args, cfg):
        run()  # warm-up: kernels, allocator, caches
        (tokens, passes), seconds = _timed(run, args.device)
        if name == "plain, greedy":
            greedy_tokens = tokens
        if name.startswith("Jacobi"):
            assert torch.equal(tokens, greedy_tokens), "greedy Jacobi must reproduce greedy decoding"
        rows.append((name, passes, seconds / len(labels), judge(tokens) if judge else None))
        print(f"  {name}: {passes} passes, {seconds:.2f} s", file=sys.stderr, flush=True)
    return rows


def _table(title: str, rows: list[Row]) -> list[str]:
    plain = next(seconds for name, _, seconds, _ in rows if name.startswith("plain, top-k"))
    lines = [
        title,
        "",
        "| method | forward passes / image | ms / image | speed-up vs plain top-k | class accuracy |",
        "|---|---|---|---|---|",
    ]
    for name, passes, seconds, accuracy in rows:
        acc = "-" if accuracy is None else f"{accuracy:.3f}"
        lines.append(f"| {name} | {passes} | {seconds * 1e3:.2f} | {plain / seconds:.2f}x | {acc} |")
    return lines + [""]


def _llamagen_b(quick: bool, device: str) -> RasterAR:
    """LlamaGen-B's shape (GPT-B: 768 wide, 12 layers, 12 heads; VQ-16 at 256 px: 16x16 tokens, 16384 codes)."""
    dim, layers, heads, grid, vocab = (64, 2, 4, (4, 4), 512) if quick else (768, 12, 12, (16, 16), 16384)
    tcfg = llamagen_transformer_config(dim=dim, n_layers=layers, n_heads=heads, vocab_size=vocab, grid=grid)
    torch.manual_seed(0)
    model = RasterAR(RasterARConfig(transformer=tcfg.to_dict(), num_classes=1000, grid=grid))
    return model.to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ar-digits", help="shipped ar preset name or preset folder")
    parser.add_argument("--n", type=int, default=100, help="images per method (one batch)")
    parser.add_argument("--n-large", type=int, default=8, help="images per method at LlamaGen-B size")
    parser.add_argument("--jacobi-window", type=int, default=8)
    parser.add_argument("--zipar-windows", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="few images, a tiny stand-in for LlamaGen-B")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.quick:
        args.n, args.n_large = 10, 2
    folder = Path(args.model) if Path(args.model).is_dir() else shipped_preset_dir(args.model)
    pipeline = ImagePipeline.load(folder).to(args.device)
    if pipeline.family != "ar":
        raise SystemExit(f"--model must be an ar preset, got family {pipeline.family!r}")
    model = pipeline.generator
    labels = (torch.arange(args.n) % len(pipeline.class_names)).to(args.device)
    judge = load_judge(pipeline.info.get("dataset", "digits"))

    def accuracy(tokens: torch.Tensor) -> float:
        with torch.no_grad():
            images = pipeline.tokenizer.decode(tokens.view(-1, *model.config.grid)).clamp(-1, 1).cpu()
        return (judge.predict(images) == labels.cpu()).float().mean().item()

    cfg = float(pipeline.info.get("cfg_scale", 1.0))
    name = args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name()
    lines = _table(
        f"{folder.name} ({model.num_tokens} tokens, {args.n} images in one batch, {name})",
        _measure(model, labels, args, cfg, accuracy),
    )
    if not args.skip_large:
        large = _llamagen_b(args.quick, args.device)
        large_labels = torch.arange(args.n_large, device=args.device) * 37 % 1000
        params = sum(p.numel() for p in large.parameters()) / 1e6
        lines += _table(
            f"LlamaGen-B shape, random weights ({params:.0f}M params, {large.num_tokens} tokens, "
            f"{args.n_large} images in one batch, {name})",
            _measure(large, large_labels, args, 1.0, None),
        )
    lines.append(f"total benchmark time {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
