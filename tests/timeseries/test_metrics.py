"""Metrics against hand-computed values and known closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genloom.timeseries import metrics as M
from genloom.timeseries.errors import SeriesInputError


def test_point_metrics_by_hand():
    y, f = np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 2.0])
    assert M.mse(y, f) == pytest.approx(5 / 3)
    assert M.mae(y, f) == pytest.approx(1.0)
    assert M.smape(y, f) == pytest.approx(200 / 3 * (1 / 3 + 0 + 2 / 6))
    # history 0, 2, 4, 6: naive one-step MAE = 2; seasonal (2) MAE = 4
    hist = np.array([0.0, 2.0, 4.0, 6.0])
    assert M.mase(y, f, hist) == pytest.approx(0.5)
    assert M.mase(y, f, hist, season=2) == pytest.approx(0.25)
    np.testing.assert_allclose(M.seasonal_naive_forecast(np.arange(5.0), 5, season=2), [3, 4, 3, 4, 3])
    with pytest.raises(SeriesInputError, match="does not match"):
        M.mse(y, f[:2])


def test_crps_of_gaussian_samples_matches_closed_form():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(40000, 1))
    y = np.array([0.5])
    pdf, cdf = math.exp(-0.125) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(0.5 / math.sqrt(2)))
    exact = 0.5 * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi)
    assert M.crps_from_samples(y, samples) == pytest.approx(exact, abs=0.01)
    levels = np.linspace(0.01, 0.99, 99)
    quantiles = M.samples_to_quantiles(samples, levels)
    assert M.crps_from_quantiles(y, quantiles, levels) == pytest.approx(exact, abs=0.02)


def test_crps_of_point_mass_is_mae():
    y = np.array([1.0, 3.0])
    samples = np.repeat(np.array([[2.0, 2.0]]), 5, axis=0)
    assert M.crps_from_samples(y, samples) == pytest.approx(1.0)


def test_weighted_quantile_loss_and_coverage():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    q = np.stack([y - 1, y, y + 1])
    # median exact; 0.1 quantile under by 1: 0.1 per step; 0.9 over by 1: 0.1 per step
    assert M.weighted_quantile_loss(y, q, [0.1, 0.5, 0.9]) == pytest.approx(np.mean([0.8, 0.0, 0.8]) / 10)
    assert M.interval_coverage(y, y - 1, np.array([0.0, 3.0, 4.0, 5.0])) == pytest.approx(0.75)
    with pytest.raises(SeriesInputError, match="strictly between 0 and 1"):
        M.weighted_quantile_loss(y, q, [0.0, 0.5, 1.0])
