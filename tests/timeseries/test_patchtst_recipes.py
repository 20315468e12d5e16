"""The named PatchTST recipes for ETTh1 (issue 6) hold the values docs/timeseries.md states, and the
benchmark script can select them. No training."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.official import build_baseline
from genloom.timeseries.recipes import (
    PATCHTST_ETTH1_RECIPES,
    TrainRecipe,
    etth1_config,
    etth1_train_recipe,
)

ROOT = Path(__file__).resolve().parents[2]


def test_default_patchtst_recipe_is_the_tslib_script():
    assert etth1_config("patchtst", 96) == etth1_config("patchtst", 96, patchtst_recipe="tslib-script")
    heads = {h: etth1_config("patchtst", h)["n_heads"] for h in (96, 192, 336, 720)}
    assert heads == {96: 2, 192: 8, 336: 8, 720: 16}
    fields = etth1_config("patchtst", 192)
    assert fields["e_layers"] == 1 and fields["seq_len"] == 96 and fields["pred_len"] == 192
    config = TSLibConfig.from_dict(fields)
    assert (config.d_model, config.d_ff, config.dropout) == (512, 2048, 0.1)
    assert etth1_train_recipe("patchtst") == TrainRecipe()
    assert (TrainRecipe().batch_size, TrainRecipe().learning_rate, TrainRecipe().train_epochs) == (
        32,
        1e-4,
        10,
    )
    assert (TrainRecipe().patience, TrainRecipe().lradj) == (3, "type1")


@pytest.mark.parametrize("horizon", [96, 192, 336, 720])
def test_patchtst_paper_recipe_values(horizon):
    fields = etth1_config("patchtst", horizon, patchtst_recipe="patchtst-paper")
    expected = {"e_layers": 3, "n_heads": 4, "d_model": 16, "d_ff": 128, "dropout": 0.3}
    assert {k: fields[k] for k in expected} == expected
    assert (fields["seq_len"], fields["label_len"], fields["pred_len"]) == (96, 48, horizon)
    config = TSLibConfig.from_dict(fields)
    assert (config.patch_len, config.stride) == (16, 8)
    recipe = etth1_train_recipe("patchtst", patchtst_recipe="patchtst-paper", seed=7)
    assert recipe == TrainRecipe(batch_size=128, seed=7)  # lr 1e-4, 10 epochs, patience 3, type1
    model = build_baseline("patchtst", config)
    assert sum(p.numel() for p in model.parameters()) < 200_000  # the small model (d_model 512: millions)


def test_patchtst_paper_training_recipe_values():
    """PatchTST's run_longExp.py: its ETTh1 script's 100 epochs, batch 128, lr 1e-4; its defaults patience
    100 and lradj type3. Same model as "patchtst-paper"."""
    for horizon in (96, 192, 336, 720):
        assert etth1_config("patchtst", horizon, patchtst_recipe="patchtst-paper-training") == etth1_config(
            "patchtst", horizon, patchtst_recipe="patchtst-paper"
        )
    recipe = etth1_train_recipe("patchtst", patchtst_recipe="patchtst-paper-training")
    assert recipe == TrainRecipe(
        batch_size=128, learning_rate=1e-4, train_epochs=100, patience=100, lradj="type3", seed=2021
    )
    assert (
        etth1_train_recipe("patchtst", patchtst_recipe="patchtst-paper-training", train_epochs=2).train_epochs
        == 2
    )


def test_patchtst_recipe_leaves_other_models_alone_and_rejects_unknown_names():
    for model in ("dlinear", "itransformer"):
        assert etth1_config(model, 96, patchtst_recipe="patchtst-paper") == etth1_config(model, 96)
        assert etth1_train_recipe(model, patchtst_recipe="patchtst-paper") == TrainRecipe()
    assert set(PATCHTST_ETTH1_RECIPES) == {"tslib-script", "patchtst-paper", "patchtst-paper-training"}
    with pytest.raises(SeriesInputError, match="unknown PatchTST recipe"):
        etth1_config("patchtst", 96, patchtst_recipe="nope")


def test_benchmark_selects_the_patchtst_recipe(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("timeseries_ett", ROOT / "benchmarks/timeseries_ett.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    seen = {}

    def fake_run_baseline(name, data, horizon, args):
        seen["recipe"] = args.patchtst_recipe
        return 0.5, 0.5, 1.0

    monkeypatch.setattr(bench, "run_baseline", fake_run_baseline)
    data = tmp_path / "ETTh1.csv"
    data.write_text("date,OT\n")
    out = tmp_path / "table.md"
    argv = ["--data", str(data), "--device", "cpu", "--models", "patchtst", "--horizons", "96"]
    assert bench.main([*argv, "--patchtst-recipe", "patchtst-paper", "--out", str(out)]) == 0
    assert seen["recipe"] == "patchtst-paper"
    assert "recipe `patchtst-paper`" in out.read_text()
    assert bench.main(argv) == 0 and seen["recipe"] == "tslib-script"


def test_epoch_learning_rate_schedules_follow_tslib_type1_and_patchtst_type3() -> None:
    from genloom.timeseries.recipes import TrainRecipe
    from genloom.timeseries.train import next_epoch_lr

    halving = TrainRecipe(learning_rate=1e-3, lradj="type1")
    assert [next_epoch_lr(halving, n) for n in (1, 2, 3)] == [1e-3, 5e-4, 2.5e-4]
    patchtst = TrainRecipe(learning_rate=1e-4, lradj="type3")
    rates = [next_epoch_lr(patchtst, n) for n in range(1, 7)]
    assert rates[:3] == [1e-4, 1e-4, 1e-4]  # epochs 1-4 run at the base rate
    assert rates[3:] == pytest.approx([9e-5, 8.1e-5, 7.29e-5])
    assert next_epoch_lr(TrainRecipe(lradj="constant"), 5) is None
