"""Offline series, the shipped zero-shot preset (beats seasonal naive on held-out series) and the demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genloom.timeseries.data.offline import (
    offline_series,
    statsmodels_series,
    synthetic_seasonality,
    synthetic_series,
    synthetic_trend,
)
from genloom.timeseries.errors import SeriesInputError


def test_statsmodels_series_are_complete_and_regular():
    series = {s.name: s for s in statsmodels_series()}
    assert {"co2", "sunspots", "elnino", "nile", "macro_realgdp"} <= set(series)
    for s in series.values():
        assert np.isfinite(s.values).all() and len(s.values) == len(s.index)
    assert len(series["elnino"].values) == 61 * 12 and series["co2"].season == 52
    assert "missing weeks filled" in series["co2"].notes
    with pytest.raises(SeriesInputError, match="unknown bundled series 'gold'"):
        offline_series("gold")


def test_synthetic_generators_are_seeded_and_have_their_components():
    a, b = synthetic_series(200, 7), synthetic_series(200, 7)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, synthetic_series(200, 8).values)
    values, period = synthetic_seasonality(240, np.random.default_rng(0), period=12)
    assert period == 12 and np.allclose(values[:-12], values[12:]) and values.std() > 0.1
    trend = synthetic_trend(100, np.random.default_rng(1))
    assert trend[0] == pytest.approx(0.0) and np.all(np.diff(np.sign(np.diff(trend))) == 0)  # monotone
    regime = synthetic_series(300, 5, kinds=("regime",))
    assert np.abs(np.diff(regime.values)).max() > 5 * np.median(np.abs(np.diff(regime.values)))


PRESET = (
    Path(__file__).resolve().parents[2]
    / "packages/timeseries/src/genloom/timeseries/presets/tiny-tokenized-ar"
)


def test_shipped_preset_beats_seasonal_naive_zero_shot():
    from genloom.timeseries.forecast import load_forecaster_by_name
    from genloom.timeseries.zeroshot import heldout_cases, zero_shot_mase

    assert (PRESET / "model" / "model.safetensors").stat().st_size < 5_000_000
    model = load_forecaster_by_name("tiny-tokenized-ar")
    rows = zero_shot_mase(
        lambda h, n: model.forecast(h, n, num_samples=20, seed=0).median[0], heldout_cases()
    )
    ours = np.mean([r[0] for r in rows.values()])
    naive = np.mean([r[1] for r in rows.values()])
    assert ours < naive, rows
    wins = sum(r[0] < r[1] for r in rows.values())
    assert wins >= len(rows) // 2, rows


def test_demo_writes_csv_and_png(tmp_path, monkeypatch):
    from genloom.timeseries.demo import run_demo

    monkeypatch.chdir(tmp_path)
    items = run_demo(Path("out"))  # a relative folder: items must still name files that exist
    assert all(item.path.is_absolute() and item.path.is_file() for item in items)
    kinds = {item.kind for item in items}
    assert kinds == {"plot", "csv"}
    frame = pd.read_csv(next(i.path for i in items if i.kind == "csv"))
    assert len(frame) == 52 and {"q0.05", "q0.95", "median", "actual"} <= set(frame.columns)
    assert (frame["q0.05"] <= frame["q0.95"]).all()
    # the last year of CO2 lies near 360-370 ppm: the forecast must be on that scale
    assert frame["median"].between(350, 380).all()
    assert next(i.path for i in items if i.kind == "plot").stat().st_size > 10_000
