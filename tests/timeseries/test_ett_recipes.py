"""Per-data-set recipes and published figures (issue 6: ETTh1 and ETTh2) hold the values docs/timeseries.md
states, and the benchmark script selects them, repeats runs (--itr) and merges parallel runs. One tiny CPU
smoke run on a synthetic ETT-layout file; no other training."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.official import build_baseline
from genloom.timeseries.recipes import (
    ETT_DATASETS,
    MODEL_RECIPES,
    PUBLISHED_ETT,
    TrainRecipe,
    ett_config,
    ett_train_recipe,
    published,
    recipe_dataset,
)

ROOT = Path(__file__).resolve().parents[2]
HORIZONS = (96, 192, 336, 720)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("timeseries_ett", ROOT / "benchmarks/timeseries_ett.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_tslib_script_recipes_differ_per_data_set():
    heads = {h: ett_config("patchtst", h, dataset="ETTh1")["n_heads"] for h in HORIZONS}
    assert heads == {96: 2, 192: 8, 336: 8, 720: 16}
    assert ett_config("patchtst", 192, dataset="ETTh1")["e_layers"] == 1
    for horizon in HORIZONS:  # TSLib PatchTST_ETTh2.sh: 3 layers, 4 heads, run.py's widths
        fields = ett_config("patchtst", horizon, dataset="ETTh2", recipe="tslib-script")
        assert (fields["e_layers"], fields["n_heads"], fields["pred_len"]) == (3, 4, horizon)
        config = TSLibConfig.from_dict(fields)
        assert (config.d_model, config.d_ff, config.dropout) == (512, 2048, 0.1)
    for dataset in ETT_DATASETS:
        fields = ett_config("itransformer", 336, dataset=dataset)
        assert (fields["d_model"], fields["d_ff"], fields["e_layers"]) == (128, 128, 2)
        dlinear = ett_config("dlinear", 96, dataset=dataset)
        assert "d_model" not in dlinear and (dlinear["seq_len"], dlinear["label_len"]) == (96, 48)
    # the protocol's recipes batch as TSLib's data provider does; a plain TrainRecipe uses every window
    assert ett_train_recipe("patchtst") == TrainRecipe(tslib_loaders=True)
    assert not TrainRecipe().tslib_loaders
    assert not ett_train_recipe("patchtst", tslib_loaders=False).tslib_loaders
    assert (TrainRecipe().batch_size, TrainRecipe().learning_rate, TrainRecipe().train_epochs) == (
        32,
        1e-4,
        10,
    )
    assert (TrainRecipe().patience, TrainRecipe().lradj, TrainRecipe().seed) == (3, "type1", 2021)


def test_itransformer_paper_widths_follow_the_itransformer_scripts():
    widths = {
        h: ett_config("itransformer", h, dataset="ETTh1", recipe="itransformer-paper")["d_model"]
        for h in HORIZONS
    }
    assert widths == {96: 256, 192: 256, 336: 512, 720: 512}
    fields = ett_config("itransformer", 720, dataset="ETTh2", recipe="itransformer-paper")
    assert (fields["d_model"], fields["d_ff"]) == (128, 128)


@pytest.mark.parametrize("dataset", ETT_DATASETS)
@pytest.mark.parametrize("horizon", HORIZONS)
def test_patchtst_paper_model_is_the_same_on_both_data_sets(dataset, horizon):
    fields = ett_config("patchtst", horizon, dataset=dataset, recipe="patchtst-paper-training")
    expected = {"e_layers": 3, "n_heads": 4, "d_model": 16, "d_ff": 128, "dropout": 0.3}
    assert {k: fields[k] for k in expected} == expected
    assert (fields["seq_len"], fields["label_len"], fields["pred_len"]) == (96, 48, horizon)
    assert fields == ett_config("patchtst", horizon, dataset=dataset, recipe="patchtst-paper")
    config = TSLibConfig.from_dict(fields)
    assert (config.patch_len, config.stride) == (16, 8)
    if horizon == 96:
        model = build_baseline("patchtst", config)
        assert sum(p.numel() for p in model.parameters()) < 200_000  # d_model 512 would be millions


def test_patchtst_training_recipes():
    """PatchTST's run_longExp.py: its scripts' 100 epochs, batch 128, lr 1e-4; its defaults patience 100
    and lradj type3. "patchtst-paper" keeps the TSLib loop with batch 128."""
    assert ett_train_recipe("patchtst", recipe="patchtst-paper-training") == TrainRecipe(
        batch_size=128, learning_rate=1e-4, train_epochs=100, patience=100, lradj="type3", seed=2021,
        tslib_loaders=True,
    )  # fmt: skip
    assert ett_train_recipe("patchtst", recipe="patchtst-paper", seed=7) == TrainRecipe(
        batch_size=128, seed=7, tslib_loaders=True
    )
    assert ett_train_recipe("patchtst", recipe="patchtst-paper-training", train_epochs=2).train_epochs == 2
    assert (
        ett_train_recipe("dlinear")
        == TrainRecipe(tslib_loaders=True)
        == ett_train_recipe("itransformer", recipe="itransformer-paper")
    )
    assert set(MODEL_RECIPES["patchtst"]) == {"tslib-script", "patchtst-paper", "patchtst-paper-training"}


def test_unknown_recipe_model_or_data_set_is_an_error():
    with pytest.raises(SeriesInputError, match="unknown patchtst recipe 'nope'"):
        ett_config("patchtst", 96, dataset="ETTh1", recipe="nope")
    with pytest.raises(SeriesInputError, match="unknown dlinear recipe"):
        ett_train_recipe("dlinear", recipe="patchtst-paper")
    with pytest.raises(SeriesInputError, match="no recipe for model 'lstm'"):
        ett_config("lstm", 96, dataset="ETTh1")
    with pytest.raises(SeriesInputError, match=r"no recipe for data set 'ETTm1'.*'ETTh1', 'ETTh2'"):
        ett_config("dlinear", 96, dataset="ETTm1")


def test_data_set_comes_from_the_file_stem_unless_given():
    assert recipe_dataset("/x/ETT-small/ETTh2.csv") == "ETTh2"
    assert recipe_dataset(Path("ETTh1.csv")) == "ETTh1"
    assert recipe_dataset("my_weather.csv", "ETTh2") == "ETTh2"
    with pytest.raises(SeriesInputError, match=r"file stem 'my_weather'.*--recipe-dataset"):
        recipe_dataset("data/my_weather.csv")
    with pytest.raises(SeriesInputError, match="data set 'etth2'"):
        recipe_dataset("ETTh2.csv", "etth2")


def test_published_figures_per_data_set():
    """iTransformer paper, full long-term results at lookback 96 (spot values per data set)."""
    for dataset in ETT_DATASETS:
        assert set(PUBLISHED_ETT[dataset]) == {"itransformer", "patchtst", "dlinear"}
        assert all(set(PUBLISHED_ETT[dataset][m]) == set(HORIZONS) for m in PUBLISHED_ETT[dataset])
    assert published("ETTh1", "iTransformer", 720) == (0.503, 0.491)
    assert published("ETTh2", "itransformer", 96) == (0.297, 0.349)
    assert published("ETTh2", "patchtst", 96) == (0.302, 0.348)
    assert published("ETTh2", "patchtst", 192) == (0.388, 0.400)
    assert published("ETTh2", "dlinear", 720) == (0.831, 0.657)
    assert published("ETTh2", "informer", 96) is None and published("ETTm1", "dlinear", 96) is None


def _fake_rows(seen, bench):
    # records what the benchmark itself resolves: the model's named recipe and the data set of the file
    def fake_run_baseline(name, data, horizon, args):
        dataset = bench.recipe_dataset(data, args.recipe_dataset)
        seen.append((name, horizon, bench.model_recipe(name, args), dataset))
        return [{"run": 0, "mse": 0.31, "mae": 0.35, "epochs": 3, "seconds": 1.0}]

    return fake_run_baseline


def test_benchmark_defaults_to_patchtst_paper_training_and_checks_the_data_set(
    bench, tmp_path, monkeypatch, capsys
):
    seen: list = []
    monkeypatch.setattr(bench, "run_baseline", _fake_rows(seen, bench))
    data = tmp_path / "ETTh2.csv"
    data.write_text("date,OT\n")
    out, rows = tmp_path / "table.md", tmp_path / "rows.json"
    argv = ["--data", str(data), "--device", "cpu", "--models", "patchtst", "--horizons", "96"]
    assert bench.main([*argv, "--out", str(out), "--json", str(rows)]) == 0
    assert seen[-1] == ("patchtst", 96, "patchtst-paper-training", "ETTh2")
    assert (
        "| ETTh2 | patchtst | patchtst-paper-training | 96 | 0 | 0.310 | 0.350 | 0.302 | 0.348 | 1.026 |"
        in (out.read_text())
    )
    assert json.loads(rows.read_text())["rows"][0]["dataset"] == "ETTh2"
    assert bench.main([*argv, "--patchtst-recipe", "tslib-script"]) == 0 and seen[-1][2] == "tslib-script"
    custom = tmp_path / "weather.csv"
    custom.write_text("date,OT\n")
    assert bench.main(["--data", str(custom), "--models", "dlinear", "--horizons", "96"]) == 2
    assert "file stem 'weather'" in capsys.readouterr().err
    assert (
        bench.main(
            ["--data", str(custom), "--models", "dlinear", "--horizons", "96", "--recipe-dataset", "ETTh1"]
        )
        == 0
    )
    assert seen[-1] == ("dlinear", 96, "tslib-script", "ETTh1")


def test_itr_mean_and_merge(bench, tmp_path):
    runs = [
        {"run": 0, "mse": 0.50, "mae": 0.40, "epochs": 4, "seconds": 10.0},
        {"run": 1, "mse": 0.53, "mae": 0.46, "epochs": 6, "seconds": 12.0},
        {"run": 2, "mse": 0.47, "mae": 0.43, "epochs": 5, "seconds": 11.0},
    ]
    mean = bench.mean_row(runs)
    assert mean["run"] == "mean" and mean["seconds"] == 33.0
    assert mean["mse"] == pytest.approx(0.50) and mean["mae"] == pytest.approx(0.43)
    base = {"dataset": "ETTh1", "model": "itransformer", "recipe": "tslib-script", "horizon": 720}
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"meta": {"itr": 3}, "rows": [{**base, **r} for r in (*runs, mean)]}))
    second.write_text(json.dumps({"meta": {}, "rows": [{**base, "model": "dlinear", **runs[0]}]}))
    out = tmp_path / "merged.md"
    assert bench.main(["--merge", str(first), str(second), "--out", str(out)]) == 0
    text = out.read_text()
    assert (
        "| ETTh1 | itransformer | tslib-script | 720 | mean | 0.500 | 0.430 | 0.503 | 0.491 | 0.994 | - | 33 |"
        in text
    )
    assert text.index("| 720 | mean |") < text.index("| dlinear |")
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with pytest.raises(SeriesInputError, match="'rows' list"):
        bench.main(["--merge", str(bad)])


def _synthetic_ett(path: Path, rows: int = 20 * 30 * 24) -> Path:
    """The fewest rows the hourly ETT protocol accepts (20 months), two series, in the ETT layout."""
    t = np.arange(rows)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2016-07-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
            "HUFL": np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(rows),
            "OT": np.cos(2 * np.pi * t / 168) + 0.1 * rng.standard_normal(rows),
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_benchmark_smoke_run_with_itr_on_a_small_ett_file(bench, tmp_path):
    data = _synthetic_ett(tmp_path / "ETTh2.csv")
    quick = [
        "--data",
        str(data),
        "--device",
        "cpu",
        "--models",
        "dlinear",
        "--horizons",
        "96",
        "--epochs",
        "1",
    ]
    quick += ["--max-batches", "3"]
    single, repeated = tmp_path / "one.json", tmp_path / "three.json"
    assert bench.main([*quick, "--json", str(single)]) == 0
    assert bench.main([*quick, "--itr", "3", "--json", str(repeated), "--out", str(tmp_path / "t.md")]) == 0
    one = json.loads(single.read_text())["rows"]
    three = json.loads(repeated.read_text())["rows"]
    assert [r["run"] for r in three] == [0, 1, 2, "mean"]
    assert three[0]["mse"] == one[0]["mse"]  # the first repeat is the single run
    assert three[1]["mse"] != three[0]["mse"] and three[2]["mse"] != three[1]["mse"]  # the stream continues
    assert three[3]["mse"] == pytest.approx(np.mean([r["mse"] for r in three[:3]]))
    assert all(r["dataset"] == "ETTh2" and r["epochs"] in (1, None) for r in three)
    assert 0.0 < three[0]["mse"] < 5.0
    assert "| ETTh2 | dlinear | tslib-script | 96 | mean |" in (tmp_path / "t.md").read_text()


def test_epoch_learning_rate_schedules_follow_tslib_type1_and_patchtst_type3() -> None:
    from genloom.timeseries.train import next_epoch_lr

    halving = TrainRecipe(learning_rate=1e-3, lradj="type1")
    assert [next_epoch_lr(halving, n) for n in (1, 2, 3)] == [1e-3, 5e-4, 2.5e-4]
    patchtst = TrainRecipe(learning_rate=1e-4, lradj="type3")
    rates = [next_epoch_lr(patchtst, n) for n in range(1, 7)]
    assert rates[:3] == [1e-4, 1e-4, 1e-4]  # epochs 1-4 run at the base rate
    assert rates[3:] == pytest.approx([9e-5, 8.1e-5, 7.29e-5])
    assert next_epoch_lr(TrainRecipe(lradj="constant"), 5) is None


def test_gpu_script_parses_and_names_the_benchmark():
    import shutil
    import subprocess

    script = ROOT / "benchmarks/timeseries_ett_gpu.sh"
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    assert subprocess.run([bash, "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "benchmarks/timeseries_ett.py" in text and "--merge" in text and "--itr 3" in text
