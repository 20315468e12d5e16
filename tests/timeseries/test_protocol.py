"""The long-term forecasting protocol reproduces the Time-Series-Library's Dataset_ETT_hour exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from genloom.timeseries.data.protocol import LongTermForecastProtocol, split_borders
from genloom.timeseries.data.timefeatures import time_features
from genloom.timeseries.errors import SeriesInputError


@pytest.mark.parity
def test_protocol_matches_tslib_fixture(etth1_csv, parity_folder):
    ref = load_file(str(parity_folder("tslib_protocol") / "cases.safetensors"))
    proto = LongTermForecastProtocol(etth1_csv, seq_len=96, label_len=48, pred_len=96)
    assert proto.border1s == ref["border1s"].tolist()
    assert proto.border2s == ref["border2s"].tolist()
    assert [len(proto.dataset(s)) for s in ("train", "val", "test")] == ref["num_samples"].tolist()
    np.testing.assert_allclose(proto.scaler.mean, ref["scaler_mean"], rtol=1e-12)
    np.testing.assert_allclose(proto.scaler.scale, ref["scaler_scale"], rtol=1e-12)
    np.testing.assert_allclose(proto.scaler.var, ref["scaler_var"], rtol=1e-12)
    names = ("seq_x", "seq_y", "seq_x_mark", "seq_y_mark")
    cases = [("", "train", 0), ("train_last_", "train", -1), ("val_first_", "val", 0)]
    cases += [("val_last_", "val", -1), ("test_first_", "test", 0), ("test_last_", "test", -1)]
    for prefix, split, index in cases:
        sample = proto.dataset(split)[index]
        for got, name in zip(sample, names):
            np.testing.assert_allclose(got, ref[prefix + name], rtol=1e-12, atol=1e-15, err_msg=prefix + name)


def _custom_csv(tmp_path, rows=200):
    dates = pd.date_range("2020-01-01", periods=rows, freq="h")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"date": dates, "target": rng.normal(size=rows), "a": rng.normal(size=rows)})
    frame["b"] = np.arange(rows, dtype=float)
    path = tmp_path / "weather.csv"
    frame.to_csv(path, index=False)
    return path


def test_custom_layout_splits_70_10_20_and_moves_target_last(tmp_path):
    proto = LongTermForecastProtocol(
        _custom_csv(tmp_path), seq_len=24, label_len=12, pred_len=12, target="target"
    )
    assert proto.layout == "custom"
    assert proto.columns == ["a", "b", "target"]
    assert proto.border1s == [0, 140 - 24, 200 - 40 - 24] and proto.border2s == [140, 160, 200]
    # the scaler saw only the 140 training rows: column b = 0..139 there
    assert proto.scaler.mean[1] == pytest.approx(69.5)
    x, y, _, _ = proto.dataset("test")[0]
    raw_b = proto.inverse_transform(np.concatenate([x, y[12:]]))[:, 1]
    np.testing.assert_allclose(raw_b, np.arange(136, 136 + 36), atol=1e-9)


def test_ett_minute_borders_are_four_times_hourly():
    b1, b2 = split_borders("ett_minute", 69680, 96)
    assert b2 == [34560, 46080, 57600] and b1 == [0, 34560 - 96, 46080 - 96]


def test_time_features_hourly_and_minute():
    dates = pd.DatetimeIndex(["2016-07-01 05:30:00"])
    np.testing.assert_allclose(
        time_features(dates, "h"), [[5 / 23 - 0.5, 4 / 6 - 0.5, 0 / 30 - 0.5, 182 / 365 - 0.5]]
    )
    assert time_features(dates, "15min").shape == (1, 5)
    assert time_features(dates, "t", timeenc=0).tolist() == [[7, 1, 4, 5, 2]]


def test_protocol_errors_name_the_problem(tmp_path):
    path = _custom_csv(tmp_path)
    with pytest.raises(SeriesInputError, match="target column 'OT' not found"):
        LongTermForecastProtocol(path, seq_len=24, label_len=12, pred_len=12)
    frame = pd.read_csv(path)
    frame["a"] = frame["a"].astype(object)
    frame.loc[17, "a"] = "oops"
    frame.to_csv(path, index=False)
    with pytest.raises(SeriesInputError, match=r"column 'a' is not numeric: row 17"):
        LongTermForecastProtocol(path, seq_len=24, label_len=12, pred_len=12, target="target")
    with pytest.raises(SeriesInputError, match="needs at least 14400 rows"):
        split_borders("ett_hour", 1000, 96)


def test_tslib_loaders_drop_partial_batches_and_average_batch_losses(tmp_path):
    import torch

    from genloom.timeseries.models.config import TSLibConfig
    from genloom.timeseries.models.official import build_baseline
    from genloom.timeseries.train import _forward, _loader, batch_mean_mse, evaluate

    proto = LongTermForecastProtocol(
        _custom_csv(tmp_path), seq_len=24, label_len=12, pred_len=12, target="target"
    )
    config = {"seq_len": 24, "label_len": 12, "pred_len": 12, "enc_in": 3, "dec_in": 3, "c_out": 3}
    model = build_baseline("dlinear", TSLibConfig(**config)).eval()
    windows = len(proto.dataset("val"))  # 9: one batch of 4 twice, the ninth window dropped
    kept = sum(len(b[0]) for b in _loader(proto, "val", 4, shuffle=True, drop_last=True))
    assert (windows, kept) == (9, 8)
    torch.manual_seed(0)
    got = batch_mean_mse(model, proto, "val", 4)
    torch.manual_seed(0)
    with torch.no_grad():
        by_hand = [
            float(((pred - true) ** 2).mean())
            for pred, true in (
                _forward(model, b, proto, "cpu")
                for b in _loader(proto, "val", 4, shuffle=True, drop_last=True)
            )
        ]
    assert got == pytest.approx(np.mean(by_hand), rel=1e-6)
    assert got != pytest.approx(evaluate(model, proto, "val").mse, rel=1e-4)  # not every window's mean
    with pytest.raises(SeriesInputError, match="fewer than one batch of 16 windows"):
        batch_mean_mse(model, proto, "val", 16)
    from genloom.timeseries.recipes import TrainRecipe
    from genloom.timeseries.train import train_supervised

    recipe = TrainRecipe(batch_size=128, train_epochs=1, tslib_loaders=True)  # 105 training windows
    with pytest.raises(SeriesInputError, match="train split has fewer than one batch of 128 windows"):
        train_supervised(model, proto, recipe, log=None)
