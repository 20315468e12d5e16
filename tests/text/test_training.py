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


def test_ema_decay_leaves_the_model_holding_the_averaged_weights() -> None:
    # replay the run step by step (same seeds, same batches) and average the weights after each step
    config = text_train_config(steps=6, lr=0.05, warmup_steps=1)
    raw, averaged = RegressionModel(), RegressionModel()
    history = []
    train(raw, _batches, config, on_step=lambda step, loss: history.append(raw.weight.detach().clone()))
    final_raw = raw.weight.detach().clone()
    train(averaged, _batches, text_train_config(steps=6, lr=0.05, warmup_steps=1, ema_decay=0.5))
    # on_step runs before each optimizer step: history[k] holds the weights after k steps
    expected = history[0].clone()
    for weights in [*history[1:], final_raw]:
        expected = 0.5 * expected + 0.5 * weights
    torch.testing.assert_close(averaged.weight.detach(), expected)
    assert not torch.allclose(averaged.weight, final_raw)


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


def test_time_budget_resumes_with_the_seconds_already_spent(tmp_path, monkeypatch) -> None:
    """A run stopped (here: crashed) after its step-4 checkpoint and resumed spends only the rest of its
    budget, on the schedule of an uninterrupted run: each step takes 10 s of a fake clock, budget 55 s."""
    import genloom.text.training as training

    now = [0.0]
    monkeypatch.setattr(training, "_clock", lambda: now[0])

    class Crash(Exception):
        pass

    def run(out_dir, crash_at: int | None = None) -> tuple[RegressionModel, list[float]]:
        def on_step(step: int, loss: float) -> None:
            if step == crash_at:
                raise Crash
            now[0] += 10.0

        config = text_train_config(steps=100, lr=0.1, warmup_steps=2, out_dir=str(out_dir), ckpt_every=2)
        model = RegressionModel()
        schedule = GlanceSchedule(start=0.5, end=0.1, anneal_steps=1000)
        losses = train(
            model,
            _batches,
            config,
            glance=schedule,
            time_budget_s=55.0,
            schedule_by_time=True,
            on_step=on_step,
        )
        return model, losses

    whole, whole_losses = run(tmp_path / "whole")
    assert len(whole_losses) == 6  # steps start at 0, 10, ..., 50 s; the one at 60 s is over budget
    with pytest.raises(Crash):
        run(tmp_path / "cut", crash_at=4)
    now[0] = 1000.0  # another process: the clock's origin is elsewhere
    resumed, resumed_losses = run(tmp_path / "cut")
    assert resumed_losses == whole_losses[4:]  # steps 4 and 5, then the budget is spent
    assert resumed.ratios == pytest.approx(whole.ratios[4:])
    torch.testing.assert_close(resumed.weight, whole.weight, atol=0, rtol=0)


def test_text_schedule_is_the_core_schedule_with_pinned_values() -> None:
    from genloom.core.train import lr_at

    config = text_train_config(steps=100, lr=0.1, warmup_steps=4)
    pinned = [
        ((0, 0.0), 0.025),
        ((3, 0.9), 0.1),
        ((4, 0.0), 0.1),
        ((10, 0.25), 0.08681980515339464),
        ((10, 0.5), 0.055),
        ((10, 0.75), 0.023180194846605365),
        ((10, 1.0), 0.01),
        ((10, 1.7), 0.01),
        ((10, -0.2), 0.1),
    ]
    for (step, progress), want in pinned:
        assert lr_at(step, config, progress=progress) == pytest.approx(want, rel=1e-12, abs=0)
    # without a progress: the step-based cosine of the core trainer, unchanged
    assert lr_at(52, config) == pytest.approx(0.055, rel=1e-12)
    assert lr_at(100, config) == pytest.approx(0.01, rel=1e-12)
    constant = text_train_config(steps=100, lr=0.1, warmup_steps=4, schedule="constant")
    assert lr_at(50, constant, progress=0.6) == 0.1


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


def _toy_corpus(count: int = 70):
    from genloom.text.corpus import ParallelCorpus

    generator = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, 12, (count, 2), generator=generator).tolist()
    # every pair unique (its index as the first source token), so a batch row names one corpus pair
    return ParallelCorpus([([5 + i] + [5 + i % 7] * s, [6 + i % 5] * t) for i, (s, t) in enumerate(lengths)])


def test_bucketed_batches_cover_each_epoch_once_with_exact_widths_and_little_padding() -> None:
    from genloom.text.corpus import BucketedBatches

    corpus = _toy_corpus()
    batches = BucketedBatches(corpus, 8, seed=1, pool=4)
    assert len(batches) == 70 // 8
    seen, padded_cells = [], 0
    for index in range(len(batches)):
        batch = batches.batch(index)
        assert batch.source.shape[1] == int(batch.source_length.max())  # exact widths, as pad_sequences
        assert batch.target.shape[1] == int(batch.target_length.max())
        padded_cells += batch.target.numel()
        for row in range(8):
            source = batch.source[row, : batch.source_length[row]].tolist()
            target = batch.target[row, : batch.target_length[row]].tolist()
            seen.append(corpus.pairs.index((source, target)) if (source, target) in corpus.pairs else -1)
    assert -1 not in seen and len(seen) == 64 and len(set(seen)) == 64  # no pair twice in an epoch
    random_cells = sum(
        corpus.sample(8, generator=torch.Generator().manual_seed(i)).target.numel() for i in range(8)
    )
    assert padded_cells < random_cells  # length buckets pad less than random batches
    again = BucketedBatches(corpus, 8, seed=1, pool=4)  # a batch depends only on (seed, index): resumable
    for index in (3, len(batches) + 2):
        torch.testing.assert_close(again.batch(index).target, batches.batch(index).target)
    assert not torch.equal(batches.batch(len(batches)).target, batches.batch(0).target)  # a new epoch


def test_indexed_batches_train_a_model_without_a_generator() -> None:
    from genloom.text.corpus import BucketedBatches

    class Seq2SeqMean(RegressionModel):
        def loss(self, batch: Seq2SeqBatch, *, glance_ratio: float = 0.0) -> torch.Tensor:  # type: ignore[override]
            features = torch.stack([batch.source.float().mean(1), batch.target.float().mean(1)] * 2, 1)
            return super().loss(features, glance_ratio=glance_ratio)

    batches = BucketedBatches(_toy_corpus(), 16)
    losses = train(Seq2SeqMean(), batches, text_train_config(steps=30, lr=0.05, warmup_steps=2))
    assert len(losses) == 30 and losses[-1] < losses[0]


def test_schedule_by_time_anneals_lr_and_glance_over_the_run_and_logs_sparsely() -> None:
    """With a long budget the progress is step / steps: the glance ratio anneals over the 20 steps, the
    learning rate warms up then decays to min_lr; `on_step` is called every 5 steps only."""
    from genloom.core.train import lr_at

    model = RegressionModel()
    schedule = GlanceSchedule(start=0.5, end=0.1, anneal_steps=1000)
    config = text_train_config(steps=20, lr=0.1, warmup_steps=2)
    logged: list[int] = []
    train(
        model, _batches, config, glance=schedule, time_budget_s=1000.0, schedule_by_time=True,
        on_step=lambda step, loss: logged.append(step), on_step_every=5,
    )  # fmt: skip
    expected = [schedule.ratio(1000 * s / 20) for s in range(20)]
    assert model.ratios == pytest.approx(expected, abs=0.01)
    assert logged == [0, 5, 10, 15]
    assert lr_at(0, config, progress=0.0) == pytest.approx(0.05)  # warm-up by optimizer steps
    assert lr_at(5, config, progress=0.0) == pytest.approx(0.1)
    assert lr_at(5, config, progress=1.0) == pytest.approx(config.min_lr)
    with pytest.raises(ConfigError, match="schedule_by_time"):
        train(RegressionModel(), _batches, config, schedule_by_time=True)
