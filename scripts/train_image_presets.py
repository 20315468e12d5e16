"""Train genloom-image's shipped presets (tokenizer, then each generator family) and write a results table.

    .venv/bin/python scripts/train_image_presets.py --device cuda --out runs/image_presets

For each data set (digits, shapes) this trains a VQ tokenizer, then the raster AR generator on its
tokens, evaluates it with the shipped judge (class accuracy of conditional samples, Frechet distance
beside real-vs-real and an untrained generator, parameters, sampling steps, time per image), saves each
preset as `<out>/<family>-<dataset>/` (fp16 safetensors) and writes `<out>/results.md`.
Copy a preset folder into `packages/image/src/genloom/image/presets/` to ship it.
`--quick` runs a few steps of everything (a CPU smoke test of the whole script).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.image.data import load_dataset
from genloom.image.evaluation import real_vs_real_frechet, score_pipeline
from genloom.image.generator_training import GeneratorTrainConfig, train_raster_ar
from genloom.image.io import write_json
from genloom.image.models.raster_ar import RasterAR, RasterARConfig, llamagen_transformer_config
from genloom.image.pipeline import ImagePipeline
from genloom.image.presets import load_judge
from genloom.image.tokenizer_training import TokenizerTrainConfig, train_tokenizer
from genloom.image.tokenizers import ConvNetConfig, VQAutoencoder, VQAutoencoderConfig


def build_tokenizer(channels: int) -> VQAutoencoder:
    """32x32 -> 8x8 tokens (downsample 4), 256 codes of dim 8, L2-normalised lookup."""
    net = ConvNetConfig(
        in_channels=channels, out_channels=channels, ch=48, ch_mult=(1, 2, 2), num_res_blocks=1, attn_levels=[2], z_channels=64
    )
    return VQAutoencoder(VQAutoencoderConfig(net=net, codebook_size=256, codebook_dim=8, dead_code_after=200))


def build_raster_ar(num_classes: int, vocab: int, grid: tuple[int, int]) -> RasterAR:
    """LlamaGen-style GPT: dim 192, 5 layers, 6 heads (under 5 MB in fp16), 2D RoPE, class prefix token."""
    tcfg = llamagen_transformer_config(dim=192, n_layers=5, n_heads=6, vocab_size=vocab, grid=grid, mlp_multiple_of=64)
    return RasterAR(RasterARConfig(transformer=tcfg.to_dict(), num_classes=num_classes, grid=grid, class_dropout=0.1))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--datasets", nargs="+", default=["digits", "shapes"])
    parser.add_argument("--tokenizer-steps", type=int, default=6000)
    parser.add_argument("--ar-steps", type=int, default=8000)
    parser.add_argument("--samples-per-class", type=int, default=100)
    parser.add_argument("--cfg", type=float, default=2.0)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (CPU smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.tokenizer_steps, args.ar_steps, args.samples_per_class = 20, 20, 4
    rows = []
    for name in args.datasets:
        train, test = load_dataset(name, "train"), load_dataset(name, "test")
        judge = load_judge(name)
        start = time.time()
        tokenizer = build_tokenizer(train.channels)
        tok_cfg = TokenizerTrainConfig(
            steps=args.tokenizer_steps, batch_size=64, lr=4e-4, warmup_steps=min(200, args.tokenizer_steps // 4 + 1),
            log_every=max(1, args.tokenizer_steps // 10),
        )
        tok_report = train_tokenizer(tokenizer, train, held_out=test, config=tok_cfg, device=args.device)
        tokenizer = tokenizer.cpu().eval()
        grid = (train.image_size // tokenizer.downsample_factor,) * 2
        untrained = build_raster_ar(train.num_classes, tokenizer.vocab_size, grid)
        model = train_raster_ar(
            build_raster_ar(train.num_classes, tokenizer.vocab_size, grid),
            tokenizer,
            train,
            held_out=test,
            device=args.device,
            config=GeneratorTrainConfig(
                steps=args.ar_steps, warmup_steps=min(200, args.ar_steps // 4 + 1), log_every=max(1, args.ar_steps // 20)
            ),
        ).cpu()
        train_minutes = (time.time() - start) / 60
        sampling = SamplingParams(top_k=args.top_k)
        info = {"dataset": name, "train_minutes": round(train_minutes, 1), "cfg_scale": args.cfg, "top_k": args.top_k}
        pipeline = ImagePipeline(tokenizer, model, class_names=train.class_names, info=info)
        score = score_pipeline(pipeline, judge, test, samples_per_class=args.samples_per_class, cfg_scale=args.cfg, sampling=sampling)
        base = score_pipeline(
            ImagePipeline(tokenizer, untrained, class_names=train.class_names), judge, test,
            samples_per_class=args.samples_per_class, cfg_scale=args.cfg, sampling=sampling,
        )
        real = real_vs_real_frechet(judge, train, test)
        info.update(
            class_accuracy=round(score.class_accuracy, 4), frechet=round(score.frechet, 3), frechet_real=round(real, 3),
            frechet_untrained=round(base.frechet, 3), tokenizer_psnr=round(tok_report.final.psnr, 2),
            codebook_usage=tok_report.final.codebook_usage, params=n_params(model), tokenizer_params=n_params(tokenizer),
            sampling_steps=score.sampling_steps, seconds_per_image_cpu=score.seconds_per_image,
        )
        pipeline.info = info
        pipeline.save(args.out / f"ar-{name}")
        rows.append((f"ar-{name}", info))
        print(json.dumps(info, indent=2))
    lines = [
        "| preset | class acc. | Frechet | real-vs-real | untrained | params (gen + tok) | steps | s / image (CPU) | tok. PSNR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset, i in rows:
        lines.append(
            f"| {preset} | {i['class_accuracy']:.3f} | {i['frechet']:.2f} | {i['frechet_real']:.2f} | {i['frechet_untrained']:.2f} "
            f"| {i['params'] / 1e6:.2f}M + {i['tokenizer_params'] / 1e6:.2f}M | {i['sampling_steps']} "
            f"| {i['seconds_per_image_cpu']:.4f} | {i['tokenizer_psnr']:.1f} dB |"
        )
    (args.out).mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    write_json(args.out / "results.json", {p: i for p, i in rows})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
