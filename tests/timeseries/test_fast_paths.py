"""The fast training and sampling paths: the wall-clock budget of `fit_fixed_steps`, the GPU recipes of
the generative protocol, the tokenised AR's last-position prefill and padding-free loss, and the helpers
of the throughput benchmark."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from genloom.core.errors import ConfigError
from genloom.timeseries import generative_protocol as gp
from genloom.timeseries.models.tokenized_ar import (
    _NoPaddingLM,
)
from genloom.timeseries.tokenizer import PAD_ID
from genloom.timeseries.train import fit_fixed_steps

ROOT = Path(__file__).resolve().parents[2]


def _slow_loss(seconds_per_step):
    """A least-squares loss whose every call sleeps `seconds_per_step(call_index)` seconds."""
    calls = []

    def loss_fn(module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        time.sleep(seconds_per_step(len(calls)))
        calls.append(1)
        return ((module(batch) - 1.0) ** 2).mean()

    return loss_fn


@pytest.fixture
def warm_trainer():
    """The first Trainer of a process pays one-off imports (about a second): keep them out of the timings."""
    fit_fixed_steps(
        nn.Linear(3, 1), _slow_loss(lambda i: 0.0), lambda _: torch.randn(8, 3), steps=1, lr=1e-2, log=None
    )


def test_time_budget_lowers_the_steps_to_what_fits(warm_trainer):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    start = time.perf_counter()
    losses = fit_fixed_steps(
        model,
        _slow_loss(lambda i: 0.02),
        lambda _: torch.randn(8, 3),
        steps=1000,  # 20 s without the budget
        lr=1e-2,
        log=None,
        time_budget_s=0.6,
        probe_steps=6,
    )
    elapsed = time.perf_counter() - start
    assert 3 <= len(losses) <= 0.9 * 0.6 / 0.02 + 1
    assert elapsed < 0.6 + 0.3
    assert not model.training


def test_time_budget_stops_a_run_that_slows_down_after_the_probe(warm_trainer):
    """The probe sees 5 ms steps and plans for ~100 of them; steps then take 50 ms: the deadline cuts it."""
    model = nn.Linear(3, 1)
    start = time.perf_counter()
    losses = fit_fixed_steps(
        model,
        _slow_loss(lambda i: 0.005 if i < 6 else 0.05),
        lambda _: torch.randn(8, 3),
        steps=1000,
        lr=1e-2,
        log=None,
        time_budget_s=0.6,
        probe_steps=6,
    )
    elapsed = time.perf_counter() - start
    assert 1 <= len(losses) <= 12
    assert elapsed < 0.6 + 0.2
    with pytest.raises(ConfigError, match="time_budget_s"):
        fit_fixed_steps(
            model,
            _slow_loss(lambda i: 0.0),
            lambda _: torch.randn(8, 3),
            steps=2,
            lr=1e-2,
            log=None,
            time_budget_s=0,
        )


def test_prefill_returns_the_last_position_and_never_the_padding_bin(tiny_forecaster):
    model = tiny_forecaster().eval()
    ids = torch.randint(1, 65, (3, 20))
    full = model.decoder(ids)[:, -1:]
    lm = _NoPaddingLM(model.decoder)
    lm.setup_cache(3, 25)
    assert model.decoder.cache_length == 48  # one cache length for every segment
    logits = lm(ids, input_pos=torch.arange(20))
    assert logits.shape == (3, 1, 65)
    assert torch.isneginf(logits[..., PAD_ID]).all()
    torch.testing.assert_close(logits[..., 1:], full[..., 1:], rtol=1e-5, atol=1e-5)
    model.decoder.remove_cache()


def test_unmasked_training_loss_equals_the_all_true_mask(tiny_forecaster):
    model = tiny_forecaster().eval()
    values = torch.randn(4, 40).cumsum(1)
    mask = torch.ones_like(values, dtype=torch.bool)
    masked = model.training_loss(values, mask, context_steps=32)
    torch.testing.assert_close(model.training_loss(values, None, context_steps=32), masked)
    mask[:, :3] = False  # real padding changes the loss: the mask is honoured, not ignored
    assert not torch.isclose(model.training_loss(values, mask, context_steps=32), masked)


def test_the_recipe_reaches_the_trainer(tmp_path, monkeypatch, tiny_forecaster):
    seen = {}

    def fake_trainer(protocol, **kwargs):
        seen.update(kwargs)
        return tiny_forecaster().eval()

    monkeypatch.setattr(gp, "train_tokenized_ar", fake_trainer)
    monkeypatch.setattr(gp, "score_sampler", lambda model, protocol, **kw: (0.25, kw["stride"]))
    rows = 14400
    frame = pd.DataFrame(
        {"date": pd.date_range("2016-07-01", periods=rows, freq="h"), "OT": np.sin(np.arange(rows) / 4)}
    )
    data = tmp_path / "ETTh9.csv"
    frame.to_csv(data, index=False)
    recipe = gp.FAST_RECIPES["tokenized-ar"]
    mse, stride, _ = gp.run_generative_protocol("tokenized-ar", data, 96, recipe=recipe, score_stride=4)
    assert (mse, stride) == (0.25, 4)
    assert seen["batch_size"] == recipe.batch_size and seen["lr"] == recipe.lr
    assert seen["time_budget_s"] == recipe.time_budget_s and seen["steps"] == recipe.steps


def _throughput_module():
    spec = importlib.util.spec_from_file_location(
        "timeseries_throughput", ROOT / "benchmarks/timeseries_throughput.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_throughput_helpers():
    bench = _throughput_module()
    a, b = bench.synthetic_histories(5, 96, "cpu"), bench.synthetic_histories(5, 96, "cpu")
    torch.testing.assert_close(a, b)
    assert a.shape == (5, 96) and float(a.std(dim=1).min()) > 0.3  # not flat, not zeros
    row = bench.Row(
        "DLinear", "fp32", eager_per_s=1000.0, compiled_per_s=2500.0, max_abs_diff=3e-6, note="forecast"
    )
    args = type("Args", (), {"batch": 5, "paths": 2})()
    table = bench.markdown([row], ["a note"], args, "CPU")
    assert "| DLinear | fp32 | 1,000 | 2,500 | 2.50x | 3.00e-06 (forecast) |" in table
    assert table.rstrip().endswith("- a note")
