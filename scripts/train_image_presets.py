"""Train genloom-image's presets (each family's tokenizer, then the family) and write a results table.

    .venv/bin/python scripts/train_image_presets.py --device cuda --out runs/image_presets

For each data set (digits, shapes) and family (ar, var, maskgit, mar) this trains the family's tokenizer
(VQ for ar / maskgit, shared; multi-scale VQ for var; KL for mar), then the generator on its tokens, then
judges conditional samples with the shipped judge: class accuracy, Frechet distance beside the real-vs-real
and untrained-generator distances, parameters, sampling steps, seconds per image, and the judge's accuracy on
the tokenizer's reconstructions of held-out images (the ceiling of any generator on that tokenizer). Each
preset is saved as `<out>/<family>-<dataset>/` (fp16 safetensors, under 5 MB per file);
`<out>/results[-<tag>].md` holds the table. Copy preset folders into `packages/image/src/genloom/image/presets/`
to ship them. `--size compact` (default) builds the small recipe of the MAR presets, `--size base` that of the
digits ar / var / maskgit ones and of the retrained shapes ones.

`--time-budget S` caps the whole process at S seconds of wall clock: every tokenizer and generator gets a
share of the time left (after a reserve for judging each family) and its cosine learning-rate decay ends when
its share or its step count runs out, whichever comes first. Several processes (one per data set / family
group, each with its own `--tag`) can share one GPU: the models are small and launch-bound. `--pack` replaces
each preset folder by `<out>/<preset>.tar` (few files to copy back from a remote machine). `--quick` runs a
few steps of everything (a CPU smoke test of the whole script). `--tokenizer-from PRESET_DIR` trains only the
generators, on that preset's tokenizer (frozen), and writes presets whose `preset.json` names that preset
(`tokenizer_from`) instead of a copy of its tokenizer: copy them beside it to ship them (`--copy-tokenizer`
stores a copy instead). MAR presets choose their sampling (guidance scale and schedule, clipping) among
`recipes.MAR_SAMPLING_CANDIDATES` on samples of another seed than the table's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genloom.core.zoo.pretrained import component_dir
from genloom.image.data import ImageDataset, load_dataset
from genloom.image.evaluation import real_vs_real_frechet, reconstruction_accuracy, score_pipeline
from genloom.image.generator_training import GeneratorTrainConfig, train_generator
from genloom.image.io import write_json
from genloom.image.judge import Judge
from genloom.image.pipeline import TOKENIZER_OF, TOKENIZERS, ImagePipeline
from genloom.image.presets import load_judge
from genloom.image.recipes import (
    DEFAULT_SAMPLING,
    FAMILIES,
    GENERATOR_GRAD_CLIP,
    GENERATOR_LR,
    MAR_SAMPLING_CANDIDATES,
    SIZES,
    build_generator,
    build_tokenizer,
)
from genloom.image.tokenizer_training import TokenizerTrainConfig, calibrate_latent_scale, train_tokenizer

TOKENIZER_KIND = {"ar": "vq", "maskgit": "vq", "var": "multiscale", "mar": "kl"}
# Shares of a time budget: a tokenizer counts TOKENIZER_WEIGHT (its reconstructions cap every generator's
# accuracy), a generator its family's weight (MAR's diffusion loss is slow, MaskGIT learns fast).
TOKENIZER_WEIGHT = 1.5
GENERATOR_WEIGHT = {"ar": 2.0, "var": 2.0, "maskgit": 0.75, "mar": 3.0}
# Seconds kept per family for judging (trained + untrained samples, reconstructions) and saving.
JUDGE_RESERVE_S = {"ar": 30.0, "var": 20.0, "maskgit": 20.0, "mar": 100.0}  # mar: + choosing its sampling
SELECTION_SEED, SELECTION_SAMPLES_PER_CLASS = (
    1000,
    8,
)  # MAR's sampling is chosen on other samples than the table's


@dataclass
class Budget:
    """Splits the wall clock left until `deadline` between the stages still to run (None: no budget)."""

    deadline: float | None
    stages: list[tuple[str, float]] = field(default_factory=list)  # (stage, weight) still to run
    reserve_s: float = 0.0  # judging time still to come

    def share(self, stage: str) -> float | None:
        """Seconds for `stage` (then dropped from the queue): its weight's part of the time left."""
        weights = dict(self.stages)
        self.stages = [(name, w) for name, w in self.stages if name != stage]
        if self.deadline is None:
            return None
        left = self.deadline - time.time() - self.reserve_s
        return max(1.0, left * weights[stage] / sum(weights.values()))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parse_args() -> argparse.Namespace:
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
    parser.add_argument("--batch-size", type=int, default=128, help="generator batch")
    parser.add_argument("--tokenizer-batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="generator learning rate (default: recipe's)")
    parser.add_argument(
        "--size",
        default="compact",
        choices=SIZES,
        help="recipe size (the digits ar/var/maskgit presets: base)",
    )
    parser.add_argument("--time-budget", type=float, default=None, help="wall-clock seconds for everything")
    parser.add_argument("--tag", default="", help="suffix of results-<tag>.md (one per parallel process)")
    parser.add_argument("--pack", action="store_true", help="tar each preset folder into <out>/<preset>.tar")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (CPU smoke test)")
    parser.add_argument(
        "--tokenizer-from",
        type=Path,
        default=None,
        metavar="PRESET_DIR",
        help="train only the generators, on this preset's (frozen) tokenizer; the new presets refer to it",
    )
    parser.add_argument(
        "--mar-prediction",
        default="v",
        choices=("v", "epsilon"),
        help="what MAR's diffusion head predicts (epsilon: MAR's own target)",
    )
    parser.add_argument(
        "--copy-tokenizer",
        action="store_true",
        help="with --tokenizer-from: store a copy of the tokenizer in each new preset instead of referring",
    )
    args = parser.parse_args()
    if args.quick:
        args.tokenizer_steps, args.generator_steps, args.samples_per_class = 5, 5, 2
        args.batch_size, args.tokenizer_batch_size = 8, 8
    return args


def make_budget(args: argparse.Namespace, start: float) -> Budget:
    """The stages of this run (tokenizers once per kind and data set, then generators) with their weights."""
    stages, reserve = [], 0.0
    for name in args.datasets:
        kinds = dict.fromkeys(TOKENIZER_KIND[f] for f in args.families)
        if args.tokenizer_from is None:
            stages += [(f"{name}/tokenizer-{kind}", TOKENIZER_WEIGHT) for kind in kinds]
        stages += [(f"{name}/{family}", GENERATOR_WEIGHT[family]) for family in args.families]
        reserve += sum(JUDGE_RESERVE_S[family] for family in args.families)
    deadline = start + args.time_budget if args.time_budget is not None else None
    return Budget(deadline, stages, reserve)


def train_family_tokenizer(
    family: str, train: ImageDataset, test: ImageDataset, args: argparse.Namespace, seconds: float | None
) -> tuple[torch.nn.Module, dict]:
    """A family's tokenizer trained on `train`, with its held-out metrics."""
    tokenizer = build_tokenizer(family, train.channels, size=args.size)
    steps = args.tokenizer_steps
    config = TokenizerTrainConfig(
        steps=steps, batch_size=args.tokenizer_batch_size, lr=4e-4, warmup_steps=min(200, steps // 4 + 1),
        log_every=max(1, steps // 10) if seconds is None else 250, eval_images=32 if args.quick else 256,
        time_budget_s=seconds,
    )  # fmt: skip
    report = train_tokenizer(tokenizer, train, held_out=test, config=config, device=args.device)
    if TOKENIZER_KIND[family] == "kl":  # MAR's latent scale: make the training latents unit-variance
        calibrate_latent_scale(tokenizer, train.images[:2048])
    return tokenizer.eval(), report.final.as_dict()


def load_shared_tokenizer(args: argparse.Namespace) -> tuple[str, str, torch.nn.Module, dict]:
    """(`tokenizer_from` name, tokenizer kind, frozen tokenizer, its metrics) of `--tokenizer-from`'s preset;
    a SystemExit naming the problem when it does not fit the requested data set or families."""
    folder = args.tokenizer_from
    try:
        info = json.loads((folder / "preset.json").read_text())
        tok_folder = component_dir(folder, "tokenizer")  # the preset holding the file (it may refer on)
        family = json.loads((tok_folder / "config.json").read_text())["family"]
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(
            f"--tokenizer-from {folder}: not a generator preset folder with a tokenizer ({err})"
        ) from None
    wrong = [f for f in args.families if TOKENIZER_OF[f] is not TOKENIZERS.get(family)]
    if wrong:
        raise SystemExit(
            f"--tokenizer-from {folder} holds a {family} tokenizer, which families {wrong} cannot use"
        )
    if args.datasets != [info.get("dataset")]:
        raise SystemExit(
            f"--tokenizer-from {folder} was trained on {info.get('dataset')!r}: pass --datasets {info.get('dataset')}"
        )
    tokenizer = TOKENIZERS[family].from_pretrained(tok_folder).eval().requires_grad_(False)
    metrics = {
        **info.get("tokenizer", {}),
        "step": info.get("tokenizer_steps", info.get("tokenizer", {}).get("step")),
    }
    return tok_folder.parent.name, TOKENIZER_KIND[args.families[0]], tokenizer, metrics


def train_family_generator(
    family: str,
    tokenizer: torch.nn.Module,
    train: ImageDataset,
    test: ImageDataset,
    args: argparse.Namespace,
    seconds: float | None,
) -> tuple[torch.nn.Module, int]:
    """The family's generator trained on `tokenizer`'s tokens of `train`, and the steps it took."""
    steps = args.generator_steps
    config = GeneratorTrainConfig(
        steps=steps, batch_size=args.batch_size, eval_samples=32 if args.quick else 256,
        warmup_steps=min(200, steps // 4 + 1), log_every=max(1, steps // 20) if seconds is None else 500,
        lr=args.lr if args.lr is not None else GENERATOR_LR[family], time_budget_s=seconds,
        grad_clip=GENERATOR_GRAD_CLIP[family],
    )  # fmt: skip
    stats: dict[str, float] = {}
    model = build_generator(
        family,
        num_classes=train.num_classes,
        tokenizer=tokenizer,
        size=args.size,
        mar_prediction=args.mar_prediction,
    )
    model = train_generator(
        model, tokenizer, train, held_out=test, device=args.device, config=config, stats=stats
    )
    return model.cpu(), int(stats["steps"])


def choose_mar_sampling(pipeline: ImagePipeline, judge: Judge, test: ImageDataset) -> list[dict]:
    """Set `pipeline.info` to the MAR sampling candidate whose samples (seed SELECTION_SEED, not the table's)
    the judge recognises best (ties: lower Frechet); returns every candidate's figures."""
    tried = []
    for candidate in MAR_SAMPLING_CANDIDATES:
        pipeline.info.update(candidate)
        score = score_pipeline(
            pipeline, judge, test, samples_per_class=SELECTION_SAMPLES_PER_CLASS,
            cfg_scale=candidate["cfg_scale"], seed=SELECTION_SEED,
        )  # fmt: skip
        tried.append(
            {
                **candidate,
                "class_accuracy": round(score.class_accuracy, 4),
                "frechet": round(score.frechet, 3),
            }
        )
        print(f"[mar sampling] {tried[-1]}", flush=True)
    best = max(tried, key=lambda t: (t["class_accuracy"], -t["frechet"]))
    pipeline.info.update({k: best[k] for k in MAR_SAMPLING_CANDIDATES[0]})
    return tried


def judge_family(
    pipeline: ImagePipeline,
    untrained: ImagePipeline,
    judge: Judge,
    test: ImageDataset,
    args: argparse.Namespace,
) -> dict:
    """Class accuracy / Frechet of the trained pipeline, Frechet of the untrained one, at the preset sampling."""
    settings = pipeline.info
    kw = dict(
        samples_per_class=args.samples_per_class,
        cfg_scale=settings["cfg_scale"],
        sampling=pipeline.default_sampling(),
    )
    score = score_pipeline(pipeline, judge, test, **kw)
    base = score_pipeline(untrained, judge, test, **kw)
    return dict(
        class_accuracy=round(score.class_accuracy, 4), frechet=round(score.frechet, 3),
        frechet_untrained=round(base.frechet, 3), sampling_steps=score.sampling_steps,
        seconds_per_image=score.seconds_per_image,
    )  # fmt: skip


def table(rows: list[tuple[str, dict]]) -> str:
    lines = [
        "| preset | class acc. | Frechet | real-vs-real | untrained | params (gen + tok) | steps | s / image | tok. PSNR | tok. recon acc. | train steps (tok + gen) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for preset, i in rows:
        lines.append(
            f"| {preset} | {i['class_accuracy']:.3f} | {i['frechet']:.2f} | {i['frechet_real']:.2f} | {i['frechet_untrained']:.2f} "
            f"| {i['params'] / 1e6:.2f}M + {i['tokenizer_params'] / 1e6:.2f}M | {i['sampling_steps']} "
            f"| {i['seconds_per_image']:.4f} ({i['device']}) | {i['tokenizer']['psnr']:.1f} dB "
            f"| {i['tokenizer']['recon_class_accuracy']:.3f} | {i['tokenizer_steps']} + {i['generator_steps']} |"
        )
    return "\n".join(lines) + "\n"


def pack(out: Path, preset: str) -> Path:
    """Replace the folder `<out>/<preset>` by `<out>/<preset>.tar` (the folder at the archive's root)."""
    archive = out / f"{preset}.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(out / preset, arcname=preset)
    shutil.rmtree(out / preset)
    return archive


def run_dataset(name: str, args: argparse.Namespace, budget: Budget, rows: list[tuple[str, dict]]) -> None:
    """Train, judge and save every requested family on one data set; appends a results row per preset."""
    train, test = load_dataset(name, "train"), load_dataset(name, "test")
    judge = load_judge(name)
    real = real_vs_real_frechet(judge, train, test)
    tokenizers: dict[str, tuple[torch.nn.Module, dict]] = {}
    shared_name = None
    if args.tokenizer_from is not None:
        shared_name, kind, tokenizer, metrics = load_shared_tokenizer(args)
        if "recon_class_accuracy" not in metrics:
            metrics["recon_class_accuracy"] = round(
                reconstruction_accuracy(judge, tokenizer.to(args.device), test), 4
            )
        tokenizers[kind] = (tokenizer.cpu(), metrics)
    for family in args.families:
        start = time.time()
        kind = TOKENIZER_KIND[family]
        if kind not in tokenizers:
            seconds = budget.share(f"{name}/tokenizer-{kind}")
            tokenizer, metrics = train_family_tokenizer(family, train, test, args, seconds)
            metrics["recon_class_accuracy"] = round(reconstruction_accuracy(judge, tokenizer, test), 4)
            tokenizers[kind] = (tokenizer.cpu(), metrics)
        tokenizer, tok_metrics = tokenizers[kind]
        model, steps = train_family_generator(
            family, tokenizer, train, test, args, budget.share(f"{name}/{family}")
        )
        info = {
            "dataset": name, "recipe_size": args.size, "train_minutes_incl_tokenizer": round((time.time() - start) / 60, 1),
            "tokenizer_steps": tok_metrics["step"], "generator_steps": steps, **DEFAULT_SAMPLING[family],
        }  # fmt: skip
        pipeline = ImagePipeline(tokenizer, model, class_names=train.class_names, info=info).to(args.device)
        untrained = build_generator(
            family, num_classes=train.num_classes, tokenizer=tokenizer, size=args.size,
            mar_prediction=args.mar_prediction,
        )  # fmt: skip
        baseline = ImagePipeline(tokenizer, untrained, class_names=train.class_names, info=info).to(
            args.device
        )
        if family == "mar":
            info["sampling_selection"] = choose_mar_sampling(pipeline, judge, test)
        info.update(judge_family(pipeline, baseline, judge, test, args))
        budget.reserve_s = max(0.0, budget.reserve_s - JUDGE_RESERVE_S[family])
        info.update(
            frechet_real=round(real, 3), tokenizer=tok_metrics, params=n_params(model),
            tokenizer_params=n_params(tokenizer), device=args.device,
        )  # fmt: skip
        pipeline.to("cpu").info = info
        tokenizer.cpu()
        refer = None if args.copy_tokenizer else shared_name
        if shared_name is not None:  # where the frozen tokenizer came from (copied or referred to)
            info["tokenizer_source"] = str(args.tokenizer_from)
        pipeline.save(args.out / f"{family}-{name}", tokenizer_from=refer)
        rows.append((f"{family}-{name}", info))
        print(json.dumps(info, indent=2, default=str), flush=True)


def main() -> None:
    args = parse_args()
    start = time.time()
    budget = make_budget(args, start)
    rows: list[tuple[str, dict]] = []
    for name in args.datasets:
        run_dataset(name, args, budget, rows)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.tag}" if args.tag else ""
    (args.out / f"results{suffix}.md").write_text(table(rows))
    if not args.pack:  # packed, each preset's figures travel in its preset.json
        write_json(args.out / f"results{suffix}.json", {p: i for p, i in rows})
    if args.pack:
        for preset, _ in rows:
            print(f"packed {pack(args.out, preset)}")
    print(table(rows))
    print(f"total {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
