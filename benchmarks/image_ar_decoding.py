"""Raster AR decoding: plain cached decoding vs greedy Jacobi vs speculative Jacobi (SJD), same samples.

    .venv/bin/python benchmarks/image_ar_decoding.py --model ar-digits --n 64 --device cuda --out ar_decoding.md

Reports forward passes per image and wall time per batch for each method, and checks that greedy Jacobi
returns exactly the greedy tokens. All paths run without CFG (core's Jacobi loop has no guidance).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.image.accelerated_decoding import jacobi_sample
from genloom.image.cli import resolve_model_folder
from genloom.image.pipeline import ImagePipeline


def _timed(fn, device: str):  # noqa: ANN001, ANN202
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="ar preset name or folder (default: first shipped)")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    pipeline = ImagePipeline.load(resolve_model_folder(args.model))
    if pipeline.family != "ar":
        raise SystemExit(f"--model must be an ar preset, got family {pipeline.family!r}")
    model = pipeline.generator.to(args.device)
    labels = (torch.arange(args.n) % len(pipeline.class_names)).to(args.device)
    greedy, sample = SamplingParams(temperature=0), SamplingParams(top_k=args.top_k)
    rows = []
    plain_greedy, t = _timed(lambda: model.generate(labels, sampling=greedy), args.device)
    rows.append(("plain, greedy", model.num_tokens, t))
    (jac, stats), t = _timed(
        lambda: jacobi_sample(model, labels, window=args.window, sampling=greedy), args.device
    )
    assert torch.equal(jac, plain_greedy), "greedy Jacobi must reproduce greedy decoding"
    rows.append((f"Jacobi (window {args.window}), greedy", stats.forward_passes, t))
    gen = torch.Generator(device=args.device).manual_seed(0)
    _, t = _timed(lambda: model.generate(labels, sampling=sample, generator=gen), args.device)
    rows.append((f"plain, top-k {args.top_k}", model.num_tokens, t))
    gen = torch.Generator(device=args.device).manual_seed(0)
    (_, stats), t = _timed(
        lambda: jacobi_sample(model, labels, window=args.window, sampling=sample, generator=gen), args.device
    )
    rows.append((f"SJD (window {args.window}), top-k {args.top_k}", stats.forward_passes, t))
    lines = [
        f"Raster AR decoding, {args.n} images of {model.num_tokens} tokens, {args.device}",
        "",
        "| method | forward passes per batch | wall time per batch (s) |",
        "|---|---|---|",
        *(f"| {name} | {passes} | {seconds:.3f} |" for name, passes, seconds in rows),
    ]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
