"""The text training wrapper over the core Trainer: glance ratio follows the step, runs are reproducible,
text defaults reach the core config, and a run resumed from a checkpoint equals an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genloom.core.errors import ConfigError
from genloom.text.glat import GlanceSchedule
from genloom.text.tasks import Seq2SeqBatch, Seq2SeqTask
from genloom.text.training import text_train_config, train


class RegressionModel(nn.Module):
    """Least squares on random batches; records the glance ratio it was given at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4, 1))
        self.ratios: list[float] = []

    def loss(self, batch: torch.Tensor, *, glance_ratio: float = 0.0) -> torch.Tensor:
        self.ratios.append(glance_ratio)
        target = batch @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        return ((batch @ self.weight - target) ** 2).mean()


def _batches(generator: torch.Generator) -> torch.Tensor:
    return torch.randn(16, 4, generator=generator)


def test_glance_ratio_follows_the_step_and_the_loss_falls() -> None:
    model = RegressionModel()
    schedule = GlanceSchedule(start=0.5, end=0.1, anneal_steps=20)
    losses = train(model, _batches, text_train_config(steps=40, lr=0.1, warmup_steps=2), glance=schedule)
    assert model.ratios == pytest.approx([schedule.ratio(s) for s in range(40)])
    assert len(losses) == 40 and losses[-1] < 0.1 * losses[0]
    assert not model.training


def test_runs_are_reproducible_and_text_defaults_reach_the_core_config() -> None:
    first, second = RegressionModel(), RegressionModel()
    config = text_train_config(steps=10, lr=0.05)
    assert config.betas == (0.9, 0.98) and config.min_lr == pytest.approx(0.005) and config.warmup_steps == 10
    assert train(first, _batches, config) == train(second, _batches, config)
    with pytest.raises(ConfigError, match="steps"):
        text_train_config(steps=0)


def test_resumed_run_equals_uninterrupted_run(tmp_path) -> None:
    """Resume from the step-6 checkpoint of a 12-step run: same final weights, glance ratios of steps 6..11."""
    task = Seq2SeqTask(name="sort", num_symbols=5, min_length=2, max_length=4)
    schedule = GlanceSchedule(start=0.5, end=0.1, anneal_steps=12)

    class Seq2SeqRegression(RegressionModel):
        def loss(self, batch: Seq2SeqBatch, *, glance_ratio: float = 0.0) -> torch.Tensor:  # type: ignore[override]
            features = torch.stack([batch.source.float().mean(1), batch.target.float().mean(1)] * 2, 1)
            return super().loss(features, glance_ratio=glance_ratio)

    def sample(generator: torch.Generator) -> Seq2SeqBatch:
        return task.sample(8, generator=generator)

    config = text_train_config(steps=12, lr=0.05, warmup_steps=2, out_dir=str(tmp_path), ckpt_every=6)
    config.keep_checkpoints = 0
    full = Seq2SeqRegression()
    train(full, sample, config, glance=schedule)
    (tmp_path / "checkpoints" / "latest").write_text("step-00000006")  # pretend the run stopped at step 6
    resumed = Seq2SeqRegression()
    losses = train(resumed, sample, config, glance=schedule)
    assert len(losses) == 6 and resumed.ratios == pytest.approx([schedule.ratio(s) for s in range(6, 12)])
    torch.testing.assert_close(resumed.weight, full.weight, atol=0, rtol=0)


class SlowModel(RegressionModel):
    """Each loss call takes 20 ms, so a 0.1 s budget allows a handful of steps, never the 10,000 asked for."""

    def loss(self, batch: torch.Tensor, *, glance_ratio: float = 0.0) -> torch.Tensor:
        import time

        time.sleep(0.02)
        return super().loss(batch, glance_ratio=glance_ratio)


def test_time_budget_stops_the_run_early_and_keeps_the_trained_weights() -> None:
    model = SlowModel()
    losses = train(
        model, _batches, text_train_config(steps=10_000, lr=0.1, warmup_steps=2), time_budget_s=0.1
    )
    assert 1 <= len(losses) <= 8
    assert model.weight.abs().sum() > 0 and not model.training
    with pytest.raises(ConfigError, match="time_budget_s"):
        train(RegressionModel(), _batches, text_train_config(steps=2), time_budget_s=0)
