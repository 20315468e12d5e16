"""`genloom ts` commands end to end on small files: forecast, train, evaluate, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from genloom.timeseries.cli import app

runner = CliRunner()


def _wide_csv(path, rows=120, nan_row=None):
    t = np.arange(rows)
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2022-01-01", periods=rows, freq="h"),
            "load": 100 + 10 * np.sin(2 * np.pi * t / 24),
            "temp": 20 + 0.1 * t,
        }
    )
    if nan_row is not None:
        frame.loc[nan_row, "temp"] = np.nan
    frame.to_csv(path, index=False)
    return path


def test_forecast_writes_quantile_csv_and_plot(tmp_path):
    data = _wide_csv(tmp_path / "d.csv")
    out, png = tmp_path / "f.csv", tmp_path / "f.png"
    result = runner.invoke(
        app,
        [
            "forecast",
            str(data),
            "--horizon",
            "24",
            "--model",
            "seasonal-naive",
            "--season",
            "24",
            "--quantiles",
            "0.1,0.5,0.9",
            "-o",
            str(out),
            "--plot",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["unique_id", "ds", "mean", "median", "q0.1", "q0.5", "q0.9"]
    assert len(frame) == 48 and frame["ds"].iloc[0] == "2022-01-06 00:00:00"
    load = frame[frame["unique_id"] == "load"]
    # seasonal naive with season 24 repeats the last day of a 24-periodic signal exactly
    np.testing.assert_allclose(
        load["median"], 100 + 10 * np.sin(2 * np.pi * np.arange(120, 144) / 24), atol=1e-9
    )
    assert (frame["q0.1"] <= frame["q0.9"]).all()
    assert png.stat().st_size > 5000


def test_forecast_with_the_default_preset(tmp_path):
    data = _wide_csv(tmp_path / "d.csv", nan_row=50)
    out = tmp_path / "f.csv"
    result = runner.invoke(
        app,
        [
            "forecast",
            str(data),
            "-H",
            "12",
            "--fill",
            "interpolate",
            "--target",
            "temp",
            "--samples",
            "20",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "filled 1 NaN value(s) in column 'temp' (first at row 50) by interpolate" in result.output
    frame = pd.read_csv(out)
    assert list(frame["unique_id"].unique()) == ["temp"] and len(frame) == 12
    # a linear ramp ending at ~31.9: the forecast stays in its neighbourhood
    assert frame["median"].between(28, 36).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "OT"], "unknown target column 'OT'"),
        ([], "column 'temp' has 1 NaN value(s), first at row 50"),
        (["--fill", "ffill", "--quantiles", "0.5,1.5"], "quantiles must lie strictly between 0 and 1"),
        (["--fill", "ffill", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--fill", "median"], "nan_policy must be one of"),
    ],
)
def test_forecast_errors_are_clear(tmp_path, args, message):
    data = _wide_csv(tmp_path / "d.csv", nan_row=50)
    result = runner.invoke(app, ["forecast", str(data), "-H", "4", "-o", str(tmp_path / "f.csv"), *args])
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")
    assert "Traceback" not in result.output


def test_train_then_evaluate_a_baseline_on_an_ett_layout_file(tmp_path):
    rows = 14400
    t = np.arange(rows)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2016-07-01", periods=rows, freq="h"),
            "A": np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=rows),
            "OT": np.cos(2 * np.pi * t / 24) + 0.1 * rng.normal(size=rows),
        }
    )
    data = tmp_path / "ETTh9.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "dlinear"
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "dlinear",
            "--data",
            str(data),
            "--horizon",
            "24",
            "--out",
            str(out),
            "--epochs",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "DLinear" and config["pred_len"] == 24
    assert config["_test_mse"] < 0.1  # a clean daily cycle: DLinear must nail it (noise variance ~0.02)
    result = runner.invoke(
        app, ["evaluate", "--protocol", "long-term", "--data", str(data), "--model", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["mse"] == pytest.approx(config["_test_mse"], rel=1e-6)
    naive = runner.invoke(
        app,
        ["evaluate", "--data", str(data), "--model", "seasonal-naive", "--horizon", "24", "--stride", "200"],
    )
    assert naive.exit_code == 0, naive.output
    assert json.loads(naive.output)["mse"] > config["_test_mse"]


def test_train_gpht_and_evaluate_at_another_horizon(tmp_path, monkeypatch):
    from genloom.timeseries import generative_protocol
    from genloom.timeseries.models.gpht import GPHTConfig

    small = GPHTConfig(
        seq_len=96,
        token_len=24,
        GT_pooling_rate=[4, 2, 1],
        depth=3,
        GT_d_model=16,
        GT_d_ff=16,
        GT_e_layers=1,
        n_heads=2,
    )
    original = generative_protocol.train_gpht
    monkeypatch.setattr(
        generative_protocol,
        "train_gpht",
        lambda protocol, **kw: original(protocol, config=small, max_batches=3, **kw),
    )
    rows = 14400
    t = np.arange(rows)
    frame = pd.DataFrame(
        {"date": pd.date_range("2016-07-01", periods=rows, freq="h"), "OT": np.sin(2 * np.pi * t / 24)}
    )
    data = tmp_path / "ETTh8.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "gpht"
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "gpht",
            "--data",
            str(data),
            "--horizon",
            "48",
            "--out",
            str(out),
            "--epochs",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["model"] == "GPHT"
    result = runner.invoke(app, ["evaluate", "--data", str(data), "--model", str(out), "--horizon", "72"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["horizon"] == 72 and np.isfinite(metrics["mse"])
    bad = runner.invoke(
        app, ["train", "--model", "prophet", "--data", str(data), "--out", str(tmp_path / "p")]
    )
    assert bad.exit_code == 2 and "unknown model 'prophet'" in bad.output


@pytest.mark.parametrize("name", ["tokenized-ar", "diffusion"])
def test_train_sampling_model_then_forecast_with_its_folder(tmp_path, monkeypatch, name):
    from genloom.timeseries import generative_protocol as gp

    small = {"tokenized-ar": {"d_model": 16, "n_layers": 1}, "diffusion": {"hidden": 16, "n_layers": 1}}[name]
    trainer = "train_tokenized_ar" if name == "tokenized-ar" else "train_diffusion"
    original = getattr(gp, trainer)
    monkeypatch.setattr(
        gp, trainer, lambda protocol, steps, **kw: original(protocol, steps=20, batch_size=16, **small, **kw)
    )
    monkeypatch.setattr(
        gp, "score_sampler", lambda model, protocol, **kw: (0.5, 0.5)
    )  # scoring: see benchmark
    rows = 14400
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2016-07-01", periods=rows, freq="h"),
            "OT": np.sin(2 * np.pi * np.arange(rows) / 24),
        }
    )
    data = tmp_path / "ETTh7.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / name
    result = runner.invoke(
        app, ["train", "--model", name, "--data", str(data), "--out", str(out), "--epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "model" / "model.safetensors").is_file()
    fc = tmp_path / "fc.csv"
    result = runner.invoke(
        app, ["forecast", str(data), "-H", "30", "--model", str(out), "--samples", "4", "-o", str(fc)]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(fc)
    assert len(frame) == 30 and np.isfinite(frame[["median", "q0.1", "q0.9"]].to_numpy()).all()
