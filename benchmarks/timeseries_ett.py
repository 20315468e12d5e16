"""Long-term forecasting benchmark on an ETT-layout CSV (lookback 96, horizons 96/192/336/720).

Trains each model with its recipe for the data set (genloom.timeseries.recipes; the data set is the
CSV's file stem, ETTh1 or ETTh2, or --recipe-dataset), evaluates on the test split (MSE/MAE on scaled
values, every window) and writes a markdown table (and --json rows): ours, published, ratio (ours /
published MSE). PatchTST defaults to the `patchtst-paper-training` recipe (`--patchtst-recipe
tslib-script` for TSLib's script). `--itr N` repeats each baseline training N times as TSLib's run.py
does (seeded once, the repeats continue the random stream) and adds a mean row.

Full ETTh1 table on a GPU:
    .venv/bin/python benchmarks/timeseries_ett.py --data .data/ETT-small/ETTh1.csv --device cuda \
        --models itransformer patchtst dlinear --horizons 96 192 336 720 --out docs/timeseries_ett_results.md
Quick CPU check: --models dlinear --horizons 96 --epochs 1.
Combine the --json files of parallel runs: --merge a.json b.json --out table.md --json table.json.

Tokenised AR and diffusion in about five minutes on one GPU (bf16 autocast, larger batches, each
training cut to a wall-clock budget; one model per family serves all four horizons):
    .venv/bin/python benchmarks/timeseries_ett.py --device cuda --models tokenized-ar diffusion --fast
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from genloom.timeseries.data.protocol import LongTermForecastProtocol
from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.official import BASELINES, build_baseline
from genloom.timeseries.recipes import (
    BENCHMARK_PATCHTST_RECIPE,
    DEFAULT_RECIPE,
    ETT_DATASETS,
    MODEL_RECIPES,
    ett_config,
    ett_train_recipe,
    published,
    recipe_dataset,
)
from genloom.timeseries.train import evaluate, seed_everything, train_supervised

GENERATIVE = ("gpht", "tokenized-ar", "diffusion")


def model_recipe(name: str, args: argparse.Namespace) -> str:
    """The named recipe the benchmark trains `name` with."""
    return {"patchtst": args.patchtst_recipe, "itransformer": args.itransformer_recipe}.get(
        name, DEFAULT_RECIPE
    )


def run_baseline(name: str, data: Path, horizon: int, args: argparse.Namespace) -> list[dict]:
    """Train and test `name` `args.itr` times; one row per run. As TSLib's run.py does, the RNG is seeded
    once, before the first model is built, and every training continues its stream (no reseeding between
    the initialisation and the shuffles), so with TSLib's loaders a CPU run is TSLib's run to float
    precision (docs/timeseries.md, session 10; single runs before it reseeded after building)."""
    dataset = recipe_dataset(data, args.recipe_dataset)
    recipe_name = model_recipe(name, args)
    protocol = LongTermForecastProtocol(data, seq_len=96, label_len=48, pred_len=horizon)
    fields = ett_config(name, horizon, dataset=dataset, n_channels=len(protocol.columns), recipe=recipe_name)
    seed_everything(args.seed)
    rows = []
    for run in range(args.itr):
        recipe = ett_train_recipe(
            name,
            recipe=recipe_name,
            seed=None,
            **({"train_epochs": args.epochs} if args.epochs else {}),
            tslib_loaders=args.tslib_loaders,
        )
        model = build_baseline(name, TSLibConfig.from_dict(fields))
        result = train_supervised(
            model, protocol, recipe, device=args.device, max_batches_per_epoch=args.max_batches
        )
        test = evaluate(model, protocol, "test", device=args.device)
        rows.append(
            {
                "run": run,
                "mse": test.mse,
                "mae": test.mae,
                "epochs": result.epochs_run,
                "seconds": result.seconds,
            }
        )
        print(f"{name} H={horizon} run {run}: MSE {test.mse:.4f} MAE {test.mae:.4f}", flush=True)
    return rows


def mean_row(runs: list[dict]) -> dict:
    """The mean of repeated runs' MSE / MAE (TSLib's --itr), with their total training seconds."""
    n = len(runs)
    return {
        "run": "mean",
        "mse": sum(r["mse"] for r in runs) / n,
        "mae": sum(r["mae"] for r in runs) / n,
        "epochs": None,
        "seconds": sum(r["seconds"] for r in runs),
    }


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


def markdown_table(rows: list[dict]) -> str:
    """Rows (with data set, model, recipe, horizon, run) as a markdown table against the published
    figures; a `mean` run row is the average of the numbered runs above it."""
    lines = [
        "Long-term forecasting, lookback 96, multivariate, test split (MSE / MAE on scaled values).",
        "Published: iTransformer paper full results (lookback 96), reproduced by the Time-Series-Library.",
        "Recipes: genloom.timeseries.recipes.MODEL_RECIPES; run `mean` averages the repeated runs (--itr; its train s is their total).",
        "",
        "| data | model | recipe | horizon | run | ours MSE | ours MAE | published MSE | published MAE "
        "| ratio MSE | epochs | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if any(r["model"] in GENERATIVE for r in rows):
        lines[2:2] = [
            "Generative rows: trained on this file's training split only (not the papers' multi-data-set "
            "pretraining), one model for all horizons, forecasting autoregressively; tokenized-ar and diffusion "
            "report the median of 20 sample paths on every 16th test window.",
        ]
    for r in rows:
        pub = published(r["dataset"], r["model"], r["horizon"])
        pub_mse, pub_mae = (f"{pub[0]:.3f}", f"{pub[1]:.3f}") if pub else ("-", "-")
        ratio = f"{r['mse'] / pub[0]:.3f}" if pub else "-"
        epochs = "-" if r.get("epochs") is None else str(r["epochs"])
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['recipe']} | {r['horizon']} | {r['run']} | {r['mse']:.3f} | "
            f"{r['mae']:.3f} | {pub_mse} | {pub_mae} | {ratio} | {epochs} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def merge_rows(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """The rows and run metadata of several --json files, in the order given (parallel runs write one
    file each)."""
    rows: list[dict] = []
    metas: list[dict] = []
    for path in paths:
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
            raise SeriesInputError(f"{path}: expected a benchmark --json file with a 'rows' list")
        rows.extend(payload["rows"])
        metas.append(payload.get("meta", {}))
    return rows, metas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_data = Path(os.environ.get("GENLOOM_DATA_DIR", "../shared/data")) / "ETT-small" / "ETTh1.csv"
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument(
        "--recipe-dataset",
        choices=ETT_DATASETS,
        default=None,
        help="the data set whose recipe and published figures apply (default: the CSV's file stem)",
    )
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
        default=BENCHMARK_PATCHTST_RECIPE,
        choices=sorted(MODEL_RECIPES["patchtst"]),
        help="PatchTST hyper-parameters: PatchTST's own script and training (default) or TSLib's script",
    )
    parser.add_argument(
        "--itransformer-recipe",
        default=DEFAULT_RECIPE,
        choices=sorted(MODEL_RECIPES["itransformer"]),
        help="iTransformer widths: d_model = d_ff = 128 (default) or the iTransformer repository's scripts",
    )
    parser.add_argument("--itr", type=int, default=1, help="repeat each baseline training N times (TSLib)")
    parser.add_argument(
        "--tslib-loaders",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="batch training and validation as TSLib does (drop_last, shuffled validation, mean of batch "
        "losses; the default); --no-tslib-loaders: every window, exact means",
    )
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, help="combine these --json files; train nothing"
    )
    args = parser.parse_args(argv)
    if args.merge:
        rows, metas = merge_rows(args.merge)
        _report(rows, args, {"merged": [str(p) for p in args.merge], "runs": metas}, show=True)
        return 0
    if args.itr < 1:
        parser.error(f"--itr must be at least 1, got {args.itr}")
    if args.itr > 1 and any(name in GENERATIVE for name in args.models):
        parser.error(
            f"--itr applies to the baselines only, not to {[m for m in args.models if m in GENERATIVE]}"
        )
    if not args.data.is_file():
        print(f"data file not found: {args.data} (pass --data or set GENLOOM_DATA_DIR)", file=sys.stderr)
        return 2
    try:
        dataset = recipe_dataset(args.data, args.recipe_dataset)
    except SeriesInputError as err:
        print(err, file=sys.stderr)
        return 2
    meta = {
        "data": str(args.data),
        "device": args.device,
        "seed": args.seed,
        "itr": args.itr,
        "epochs": args.epochs,
        "max_batches": args.max_batches,
        "torch": torch.__version__,
    }
    rows = []
    for name in args.models:
        for horizon in args.horizons:
            start = time.time()
            base = {"dataset": dataset, "model": name, "recipe": model_recipe(name, args), "horizon": horizon}
            if name in GENERATIVE:
                mse, mae, seconds = run_generative(name, args.data, horizon, args)
                runs = [{"run": 0, "mse": mse, "mae": mae, "epochs": None, "seconds": seconds}]
                base["recipe"] = "-"
            else:
                runs = run_baseline(name, args.data, horizon, args)
            rows.extend({**base, **run} for run in runs)
            if len(runs) > 1:
                rows.append({**base, **mean_row(runs)})
            print(
                f"{name} H={horizon}: MSE {rows[-1]['mse']:.4f} MAE {rows[-1]['mae']:.4f} "
                f"({time.time() - start:.0f}s)",
                flush=True,
            )
            _report(rows, args, meta, show=False)  # after every horizon: a killed run keeps its rows
    _report(rows, args, meta, show=True)
    return 0


def _report(rows: list[dict], args: argparse.Namespace, meta: dict, *, show: bool) -> None:
    table = markdown_table(rows)
    if show:
        print(table)
    if args.out is not None:
        _write(args.out, table)
    if args.json is not None:
        _write(args.json, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
