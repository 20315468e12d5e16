"""Long-term forecasting benchmark on an ETT-layout CSV (lookback 96, horizons 96/192/336/720).

Trains each model with the Time-Series-Library recipe, evaluates on the test split (MSE/MAE on scaled
values, every window) and writes a markdown table: ours, published, ratio (ours / published MSE).

Full table on a GPU (the lead engineer's command):
    .venv/bin/python benchmarks/timeseries_ett.py --data ../shared/data/ETT-small/ETTh1.csv --device cuda \
        --models itransformer patchtst dlinear gpht tokenized-ar diffusion --horizons 96 192 336 720 \
        --out docs/timeseries_ett_results.md
Quick CPU check: --models dlinear --horizons 96 --epochs 1.
PatchTST with the hyper-parameters of PatchTST's own ETTh1 script (issue 6): --patchtst-recipe patchtst-paper.

Tokenised AR and diffusion in about five minutes on one GPU (bf16 autocast, larger batches, each
training cut to a wall-clock budget; one model per family serves all four horizons):
    .venv/bin/python benchmarks/timeseries_ett.py --device cuda --models tokenized-ar diffusion --fast
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from genloom.timeseries.data.protocol import LongTermForecastProtocol
from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.official import BASELINES, build_baseline
from genloom.timeseries.recipes import (
    PATCHTST_ETTH1_RECIPES,
    PUBLISHED_ETTH1,
    etth1_config,
    etth1_train_recipe,
)
from genloom.timeseries.train import evaluate, seed_everything, train_supervised

GENERATIVE = ("gpht", "tokenized-ar", "diffusion")


def run_baseline(name: str, data: Path, horizon: int, args: argparse.Namespace) -> tuple[float, float, float]:
    protocol = LongTermForecastProtocol(data, seq_len=96, label_len=48, pred_len=horizon)
    recipe = etth1_train_recipe(
        name,
        patchtst_recipe=args.patchtst_recipe,
        seed=args.seed,
        **({"train_epochs": args.epochs} if args.epochs else {}),
    )
    seed_everything(recipe.seed)
    fields = etth1_config(
        name, horizon, n_channels=len(protocol.columns), patchtst_recipe=args.patchtst_recipe
    )
    config = TSLibConfig.from_dict(fields)
    model = build_baseline(name, config)
    result = train_supervised(
        model, protocol, recipe, device=args.device, max_batches_per_epoch=args.max_batches
    )
    test = evaluate(model, protocol, "test", device=args.device)
    return test.mse, test.mae, result.seconds


def run_generative(
    name: str, data: Path, horizon: int, args: argparse.Namespace
) -> tuple[float, float, float]:
    from dataclasses import replace

    from genloom.timeseries.generative_protocol import FAST_RECIPES, FULL_RECIPES, run_generative_protocol

    recipe = None
    if name in FULL_RECIPES and (args.fast or args.time_budget is not None):
        recipe = FAST_RECIPES[name] if args.fast else FULL_RECIPES[name]
        if args.time_budget is not None:
            recipe = replace(recipe, time_budget_s=args.time_budget)
    return run_generative_protocol(
        name,
        data,
        horizon,
        device=args.device,
        epochs=args.epochs,
        seed=args.seed,
        max_batches=args.max_batches,
        recipe=recipe,
    )


def markdown_table(rows: list[dict], data_name: str, patchtst_recipe: str = "tslib-script") -> str:
    lines = [
        f"Long-term forecasting on `{data_name}`, lookback 96, multivariate, test split (MSE / MAE on scaled values).",
        "Published: iTransformer paper full results (lookback 96), reproduced by the Time-Series-Library.",
        "",
        "| model | horizon | ours MSE | ours MAE | published MSE | published MAE | ratio MSE | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if patchtst_recipe != "tslib-script" and any(r["model"] == "patchtst" for r in rows):
        lines.insert(
            2,
            f"PatchTST rows: recipe `{patchtst_recipe}` (genloom.timeseries.recipes.PATCHTST_ETTH1_RECIPES).",
        )
    if any(r["model"] in GENERATIVE for r in rows):
        lines[1:1] = [
            "Generative rows: trained on this file's training split only (not the papers' multi-data-set "
            "pretraining), one model for all horizons, forecasting autoregressively; tokenized-ar and diffusion "
            "report the median of 20 sample paths on every 16th test window.",
        ]
    for r in rows:
        pub = PUBLISHED_ETTH1.get(r["model"], {}).get(r["horizon"]) if data_name.startswith("ETTh1") else None
        pub_mse, pub_mae = (f"{pub[0]:.3f}", f"{pub[1]:.3f}") if pub else ("-", "-")
        ratio = f"{r['mse'] / pub[0]:.3f}" if pub else "-"
        lines.append(
            f"| {r['model']} | {r['horizon']} | {r['mse']:.3f} | {r['mae']:.3f} | {pub_mse} | {pub_mae} | {ratio} | "
            f"{r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_data = Path(os.environ.get("GENLOOM_DATA_DIR", "../shared/data")) / "ETT-small" / "ETTh1.csv"
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["itransformer", "patchtst", "dlinear"],
        choices=[*BASELINES, *GENERATIVE],
    )
    parser.add_argument("--horizons", nargs="+", type=int, default=[96, 192, 336, 720])
    parser.add_argument(
        "--epochs", type=int, default=None, help="override the recipe's epochs (quick checks)"
    )
    parser.add_argument("--max-batches", type=int, default=None, help="cap batches per epoch (quick checks)")
    parser.add_argument(
        "--fast", action="store_true", help="tokenized-ar / diffusion: the GPU recipes with time budgets"
    )
    parser.add_argument(
        "--time-budget", type=float, default=None, help="tokenized-ar / diffusion: training seconds cap"
    )
    parser.add_argument(
        "--patchtst-recipe",
        default="tslib-script",
        choices=sorted(PATCHTST_ETTH1_RECIPES),
        help="PatchTST hyper-parameters: TSLib's ETTh1 script (default) or PatchTST's own (docs/timeseries.md)",
    )
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"data file not found: {args.data} (pass --data or set GENLOOM_DATA_DIR)", file=sys.stderr)
        return 2
    rows = []
    for name in args.models:
        for horizon in args.horizons:
            start = time.time()
            runner = run_generative if name in GENERATIVE else run_baseline
            mse, mae, seconds = runner(name, args.data, horizon, args)
            rows.append({"model": name, "horizon": horizon, "mse": mse, "mae": mae, "seconds": seconds})
            print(f"{name} H={horizon}: MSE {mse:.4f} MAE {mae:.4f} ({time.time() - start:.0f}s)", flush=True)
    table = markdown_table(rows, args.data.name, args.patchtst_recipe)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(table)
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
