"""Per-data-set hyper-parameters of the published long-term forecasting runs (lookback 96) and the
published figures they are compared with, so our runs train the baselines the way the tables were made.

Sources (read, not copied): thuml/Time-Series-Library `scripts/long_term_forecast/ETT_script/*_ETTh{1,2}.sh`
and its run.py defaults; thuml/iTransformer `scripts/multivariate_forecasting/ETT/iTransformer_ETTh{1,2}.sh`;
yuqinie98/PatchTST `PatchTST_supervised/scripts/PatchTST/etth{1,2}.sh` and `run_longExp.py` defaults.
The data set is picked from the CSV's file stem (`recipe_dataset`), or passed explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genloom.timeseries.errors import SeriesInputError


@dataclass
class TrainRecipe:
    """TSLib `exp_long_term_forecasting` defaults: Adam, MSE loss, lr halved every epoch after the first
    (lradj type1), early stopping on the validation loss with patience 3, seed 2021. `seed=None` leaves
    the random state as it is (TSLib seeds once per process, before building the model; its `--itr`
    repeats continue the stream). `tslib_loaders=True` batches as TSLib's data provider does: training and
    validation drop their last partial batch, validation is shuffled and its loss is the mean of per-batch
    losses, and the random stream advances as TSLib's per-epoch test pass advances it (default: every
    window, exact means; the test split is scored over every window either way)."""

    learning_rate: float = 1e-4
    batch_size: int = 32
    train_epochs: int = 10
    patience: int = 3
    lradj: str = "type1"
    seed: int | None = 2021
    tslib_loaders: bool = False


ETT_DATASETS: tuple[str, ...] = ("ETTh1", "ETTh2")

# Fields every script sets; everything else is run.py's default (d_model 512, n_heads 8, d_ff 2048,
# moving_avg 25, dropout 0.1, embed timeF, activation gelu).
_COMMON = {
    "seq_len": 96,
    "label_len": 48,
    "e_layers": 2,
    "d_layers": 1,
    "factor": 3,
    "enc_in": 7,
    "dec_in": 7,
    "c_out": 7,
}

ModelOverrides = Callable[[str, int], dict[str, Any]]


def _none(dataset: str, horizon: int) -> dict[str, Any]:
    return {}


def _itransformer_tslib(dataset: str, horizon: int) -> dict[str, Any]:
    # TSLib has `iTransformer_ETTh2.sh` (d_model = d_ff = 128) and no ETTh1 script; our ETTh1 runs use
    # the same values (docs/timeseries.md has what they measured).
    return {"d_model": 128, "d_ff": 128}


def _itransformer_paper(dataset: str, horizon: int) -> dict[str, Any]:
    # The iTransformer repository's own scripts (those behind the published table): ETTh1 d_model = d_ff
    # = 256 at 96/192 and 512 at 336/720; ETTh2 128 at every horizon.
    width = (256 if horizon <= 192 else 512) if dataset == "ETTh1" else 128
    return {"d_model": width, "d_ff": width}


def _patchtst_tslib(dataset: str, horizon: int) -> dict[str, Any]:
    # TSLib `PatchTST_ETTh1.sh`: one layer, heads 2/8/8/16 by horizon; `PatchTST_ETTh2.sh`: 3 layers, 4 heads.
    if dataset == "ETTh1":
        return {"e_layers": 1, "n_heads": {96: 2, 192: 8, 336: 8, 720: 16}.get(horizon, 8)}
    return {"e_layers": 3, "n_heads": 4}


def _patchtst_paper(dataset: str, horizon: int) -> dict[str, Any]:
    # PatchTST's own `etth1.sh` and `etth2.sh` set the same model (lookback 336 there, 96 here).
    return {"e_layers": 3, "n_heads": 4, "d_model": 16, "d_ff": 128, "dropout": 0.3}


# Named recipes per model: (model overrides by data set and horizon, TrainRecipe fields).
# PatchTST (issue 6: our runs of TSLib's ETTh1 script land 6-7 % below the published MSE):
# - "tslib-script": TSLib's `PatchTST_ETTh{1,2}.sh` with run.py's d_model 512 / d_ff 2048 / dropout 0.1,
#   batch 32, lr 1e-4, 10 epochs, patience 3, type1.
# - "patchtst-paper": the model of PatchTST's own script (e_layers 3, n_heads 4, d_model 16, d_ff 128,
#   dropout 0.3, batch 128, lr 1e-4) at lookback 96 under the TSLib loop (10 epochs, patience 3, type1);
#   the TSLib module's head dropout is `dropout` (0.3) where the official script sets head_dropout 0.
# - "patchtst-paper-training" (the benchmark's default): the same model trained as PatchTST's
#   `run_longExp.py` does (its scripts' 100 epochs, its defaults patience 100 and lradj type3: lr 1e-4 for
#   epochs 1-4, then x0.9 an epoch). On ETTh1 it lands within 3 % of the published MSE at all four
#   horizons (docs/timeseries.md).
# iTransformer:
# - "tslib-script" (default): d_model = d_ff = 128 on both data sets (see `_itransformer_tslib`).
# - "itransformer-paper": the iTransformer repository's per-data-set widths (see `_itransformer_paper`).
_PAPER_TRAINING = {"batch_size": 128, "train_epochs": 100, "patience": 100, "lradj": "type3"}
MODEL_RECIPES: dict[str, dict[str, tuple[ModelOverrides, dict[str, Any]]]] = {
    "patchtst": {
        "tslib-script": (_patchtst_tslib, {}),
        "patchtst-paper": (_patchtst_paper, {"batch_size": 128}),
        "patchtst-paper-training": (_patchtst_paper, _PAPER_TRAINING),
    },
    "itransformer": {
        "tslib-script": (_itransformer_tslib, {}),
        "itransformer-paper": (_itransformer_paper, {}),
    },
    "dlinear": {"tslib-script": (_none, {})},  # TSLib's DLinear_ETTh1.sh sets no model field; no ETTh2 script
    "informer": {"tslib-script": (_none, {})},
    "autoformer": {"tslib-script": (_none, {})},
}
DEFAULT_RECIPE = "tslib-script"
BENCHMARK_PATCHTST_RECIPE = "patchtst-paper-training"

# Published MSE / MAE at lookback 96: iTransformer paper (Liu et al., ICLR 2024, arXiv:2310.06625v4),
# appendix table "Full results of the long-term forecasting task" (page 23), columns iTransformer,
# PatchTST and DLinear; TSLib reproduces these. (A third-party README lists PatchTST ETTh2 96 as
# 0.292/0.342 and 192 as 0.387/0.400; the paper prints 0.302/0.348 and 0.388/0.400, used here.)
PUBLISHED_ETT: dict[str, dict[str, dict[int, tuple[float, float]]]] = {
    "ETTh1": {
        "itransformer": {96: (0.386, 0.405), 192: (0.441, 0.436), 336: (0.487, 0.458), 720: (0.503, 0.491)},
        "patchtst": {96: (0.414, 0.419), 192: (0.460, 0.445), 336: (0.501, 0.466), 720: (0.500, 0.488)},
        "dlinear": {96: (0.386, 0.400), 192: (0.437, 0.432), 336: (0.481, 0.459), 720: (0.519, 0.516)},
    },
    "ETTh2": {
        "itransformer": {96: (0.297, 0.349), 192: (0.380, 0.400), 336: (0.428, 0.432), 720: (0.427, 0.445)},
        "patchtst": {96: (0.302, 0.348), 192: (0.388, 0.400), 336: (0.426, 0.433), 720: (0.431, 0.446)},
        "dlinear": {96: (0.333, 0.387), 192: (0.477, 0.476), 336: (0.594, 0.541), 720: (0.831, 0.657)},
    },
}


def recipe_dataset(
    path: str | Path | None = None, dataset: str | None = None, *, default: str | None = None
) -> str:
    """The data set whose recipe and published figures apply: `dataset` when given (checked), else the
    file stem of `path` (ETTh1.csv -> "ETTh1"), else `default` when one is given. An unknown name is an
    error naming the known ones."""
    name = dataset if dataset is not None else (Path(path).stem if path is not None else None)
    if dataset is None and name not in ETT_DATASETS and default is not None:
        name = default
    if name not in ETT_DATASETS:
        origin = f"data set {dataset!r}" if dataset is not None else f"file stem {name!r} of {path}"
        raise SeriesInputError(
            f"no recipe for {origin}; known data sets: {list(ETT_DATASETS)} "
            "(pass the recipe data set explicitly, e.g. --recipe-dataset ETTh1, to use one of them)"
        )
    return name


def _model_recipe(model: str, recipe: str | None) -> tuple[ModelOverrides, dict[str, Any]]:
    if model not in MODEL_RECIPES:
        raise SeriesInputError(f"no recipe for model {model!r}; known: {sorted(MODEL_RECIPES)}")
    named = MODEL_RECIPES[model]
    name = DEFAULT_RECIPE if recipe is None else recipe
    if name not in named:
        raise SeriesInputError(f"unknown {model} recipe {name!r}; known: {sorted(named)}")
    return named[name]


def ett_config(
    model: str, horizon: int, *, dataset: str, n_channels: int = 7, recipe: str | None = None
) -> dict[str, Any]:
    """TSLib config fields for `model` at `horizon` on ETT data set `dataset` with `n_channels` columns.
    `recipe` names one of `MODEL_RECIPES[model]` (default "tslib-script")."""
    dataset, model = recipe_dataset(dataset=dataset), model.lower()
    overrides = _model_recipe(model, recipe)[0]
    fields = {**_COMMON, "pred_len": horizon, **overrides(dataset, horizon)}
    fields.update(enc_in=n_channels, dec_in=n_channels, c_out=n_channels)
    return fields


def ett_train_recipe(model: str, *, recipe: str | None = None, **fields: Any) -> TrainRecipe:
    """The `TrainRecipe` of `model`'s named `recipe` (TSLib defaults unless the recipe changes them), with
    `fields` (e.g. train_epochs, seed) applied last. The same on every ETT data set. It batches as TSLib's
    data provider does (`tslib_loaders=True`: with it every published ETTh1 row of the three baselines is
    reproduced within 3%, docs/timeseries.md) unless `fields` says otherwise."""
    return TrainRecipe(**{"tslib_loaders": True, **_model_recipe(model.lower(), recipe)[1], **fields})


def published(dataset: str, model: str, horizon: int) -> tuple[float, float] | None:
    """Published (MSE, MAE) for `model` at `horizon` on `dataset`, or None where the table has none."""
    return PUBLISHED_ETT.get(dataset, {}).get(model.lower(), {}).get(horizon)
