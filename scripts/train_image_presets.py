"""Train genloom-image's presets (each family's tokenizer, then the family) and write a results table.

    .venv/bin/python scripts/train_image_presets.py --device cuda --out runs/image_presets

For each data set (digits, shapes) and family (ar, var, maskgit, mar) this trains the family's tokenizer
(VQ for ar / maskgit, shared; multi-scale VQ for var; KL for mar), then the generator on its tokens, then
judges conditional samples with the shipped judge: class accuracy, Frechet distance beside the real-vs-real
and untrained-generator distances, parameters, sampling steps, seconds per image. Each preset is saved as
`<out>/<family>-<dataset>/` (fp16 safetensors, under 5 MB per file); `<out>/results.md` holds the table.
Copy preset folders into `packages/image/src/genloom/image/presets/` to ship them. `--size compact` (default)
builds the small recipe of the MAR and shapes presets, `--size base` that of the digits ar / var / maskgit ones.
Several processes (one per data set / family group) can share one GPU: the models are small and launch-bound.
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
from genloom.image.generator_training import GeneratorTrainConfig, train_generator
from genloom.image.io import write_json
from genloom.image.pipeline import ImagePipeline
from genloom.image.presets import load_judge
from genloom.image.recipes import DEFAULT_SAMPLING, FAMILIES, SIZES, build_generator, build_tokenizer
from genloom.image.tokenizer_training import TokenizerTrainConfig, calibrate_latent_scale, train_tokenizer

TOKENIZER_KIND = {"ar": "vq", "maskgit": "vq", "var": "multiscale", "mar": "kl"}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--datasets", nargs="+", default=["digits", "shapes"])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--tokenizer-steps", type=int, default=6000)
    parser.add_argument("--generator-steps", type=int, default=8000)
    parser.add_argument("--samples-per-class", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128, help="generator batch (tokenizers use 64)")
    parser.add_argument(
        "--size",
        default="compact",
        choices=SIZES,
        help="recipe size (the digits ar/var/maskgit presets: base)",
    )
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (CPU smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.tokenizer_steps, args.generator_steps, args.samples_per_class, args.batch_size = 5, 5, 2, 8
    eval_images = 32 if args.quick else 256
    tokenizer_batch = 8 if args.quick else 64
    rows = []
    for name in args.datasets:
        train, test = load_dataset(name, "train"), load_dataset(name, "test")
        judge = load_judge(name)
        real = real_vs_real_frechet(judge, train, test)
        tokenizers: dict[str, tuple[torch.nn.Module, dict]] = {}
        for family in args.families:
            start = time.time()
            kind = TOKENIZER_KIND[family]
            if kind not in tokenizers:
                tokenizer = build_tokenizer(family, train.channels, size=args.size)
                config = TokenizerTrainConfig(
                    steps=args.tokenizer_steps, batch_size=tokenizer_batch, lr=4e-4, warmup_steps=min(200, args.tokenizer_steps // 4 + 1),
                    log_every=max(1, args.tokenizer_steps // 10), eval_images=eval_images,
                )  # fmt: skip
                report = train_tokenizer(tokenizer, train, held_out=test, config=config, device=args.device)
                if kind == "kl":  # MAR's latent scale: make the training latents unit-variance
                    calibrate_latent_scale(tokenizer, train.images[:2048])
                tokenizers[kind] = (tokenizer.cpu().eval(), report.final.as_dict())
            tokenizer, tok_metrics = tokenizers[kind]
            settings = dict(DEFAULT_SAMPLING[family])
            untrained = build_generator(
                family, num_classes=train.num_classes, tokenizer=tokenizer, size=args.size
            )
            gen_config = GeneratorTrainConfig(
                steps=args.generator_steps, batch_size=args.batch_size, eval_samples=eval_images, warmup_steps=min(200, args.generator_steps // 4 + 1),
                log_every=max(1, args.generator_steps // 20), lr=1e-3 if family != "mar" else 5e-4,
            )  # fmt: skip
            model = train_generator(
                build_generator(family, num_classes=train.num_classes, tokenizer=tokenizer, size=args.size), tokenizer, train,
                held_out=test, device=args.device, config=gen_config,
            ).cpu()  # fmt: skip
            train_minutes = (time.time() - start) / 60
            info = {
                "dataset": name, "recipe_size": args.size, "train_minutes_incl_tokenizer": round(train_minutes, 1),
                "tokenizer_steps": args.tokenizer_steps, "generator_steps": args.generator_steps, **settings,
            }  # fmt: skip
            pipeline = ImagePipeline(tokenizer, model, class_names=train.class_names, info=info).to(
                args.device
            )
            sampling = SamplingParams(top_k=settings.get("top_k"))
            kw = dict(
                samples_per_class=args.samples_per_class, cfg_scale=settings["cfg_scale"], sampling=sampling
            )
            score = score_pipeline(pipeline, judge, test, **kw)
            base = score_pipeline(
                ImagePipeline(tokenizer, untrained, class_names=train.class_names, info=info).to(args.device),
                judge,
                test,
                **kw,
            )
            info.update(
                class_accuracy=round(score.class_accuracy, 4), frechet=round(score.frechet, 3), frechet_real=round(real, 3),
                frechet_untrained=round(base.frechet, 3), tokenizer=tok_metrics, params=n_params(model),
                tokenizer_params=n_params(tokenizer), sampling_steps=score.sampling_steps,
                seconds_per_image=score.seconds_per_image, device=args.device,
            )  # fmt: skip
            pipeline.to("cpu").info = info
            pipeline.save(args.out / f"{family}-{name}")
            rows.append((f"{family}-{name}", info))
            print(json.dumps(info, indent=2, default=str))
    lines = [
        "| preset | class acc. | Frechet | real-vs-real | untrained | params (gen + tok) | steps | s / image | tok. PSNR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset, i in rows:
        lines.append(
            f"| {preset} | {i['class_accuracy']:.3f} | {i['frechet']:.2f} | {i['frechet_real']:.2f} | {i['frechet_untrained']:.2f} "
            f"| {i['params'] / 1e6:.2f}M + {i['tokenizer_params'] / 1e6:.2f}M | {i['sampling_steps']} "
            f"| {i['seconds_per_image']:.4f} ({i['device']}) | {i['tokenizer']['psnr']:.1f} dB |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    write_json(args.out / "results.json", {p: i for p, i in rows})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
