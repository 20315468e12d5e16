"""Wall-clock budgets of the tokenizer / generator training loops and the multi-scale VQ's dead-code restarts."""

from __future__ import annotations

import time

import torch

from genloom.image.data import ImageDataset
from genloom.image.generator_training import GeneratorTrainConfig, train_generator
from genloom.image.recipes import build_generator, build_tokenizer, sampling_params
from genloom.image.tokenizer_training import TokenizerTrainConfig, WallClockCosine, train_tokenizer


def _tiny_data(n: int = 16) -> ImageDataset:
    images = torch.rand(n, 1, 32, 32) * 2 - 1
    labels = torch.arange(n) % 2
    return ImageDataset(images, labels, class_names=["a", "b"])


def test_schedule_follows_steps_without_a_budget() -> None:
    schedule = WallClockCosine(steps=10, warmup_steps=2)
    assert schedule.lr_factor(0) == 0.5  # warmup
    assert abs(schedule.lr_factor(5) - 0.5) < 1e-9  # halfway through the cosine
    assert not schedule.finished(9) and schedule.finished(10)


def test_schedule_ends_when_the_time_budget_runs_out() -> None:
    schedule = WallClockCosine(steps=10**9, warmup_steps=1, seconds=0.05)
    assert not schedule.finished(1)
    time.sleep(0.06)
    assert schedule.finished(1) and schedule.lr_factor(1) == 0.0


def test_generator_training_stops_on_its_time_budget() -> None:
    data = _tiny_data()
    tokenizer = build_tokenizer("ar", channels=1, size="compact").eval()
    model = build_generator("ar", num_classes=2, tokenizer=tokenizer, size="compact")
    stats: dict[str, float] = {}
    config = GeneratorTrainConfig(
        steps=10**6, batch_size=4, warmup_steps=1, time_budget_s=0.5, log_every=10**6
    )
    start = time.time()
    train_generator(model, tokenizer, data, config=config, stats=stats, log=lambda _: None)
    assert time.time() - start < 60.0  # the first steps include one-off setup on a shared CPU
    assert 1 <= stats["steps"] < 10**6


def _train_var_tokenizer(restart_after: int | None):
    tokenizer = build_tokenizer("var", channels=1, size="compact")
    config = TokenizerTrainConfig(
        steps=3,
        batch_size=4,
        warmup_steps=1,
        log_every=3,
        eval_images=4,
        restart_scale_codes_after=restart_after,
    )
    return tokenizer, train_tokenizer(tokenizer, _tiny_data(8), config=config, log=lambda _: None).final


def test_multiscale_tokenizer_training_restarts_idle_codes_through_the_core_quantizer() -> None:
    """`restart_scale_codes_after` (200 by default, as before) sets the quantizer's `dead_code_after`."""
    assert TokenizerTrainConfig().restart_scale_codes_after == 200
    tokenizer, final = _train_var_tokenizer(2)
    assert tokenizer.quantize.dead_code_after == tokenizer.config.dead_code_after == 2
    # 256 codes, a few of them picked by 4 tiny images: most idled 2 steps and were re-seeded.
    assert final.dead_codes_restarted == int(tokenizer.quantize.codes_restarted) > tokenizer.vocab_size // 2
    tokenizer, final = _train_var_tokenizer(None)
    assert tokenizer.quantize.dead_code_after is None and final.dead_codes_restarted == 0


def test_sampling_params_of_preset_settings() -> None:
    params = sampling_params({"cfg_scale": 2.0, "top_k": 64, "temperature": 0.7})
    assert (params.temperature, params.top_k, params.top_p) == (0.7, 64, None)
    assert sampling_params({}).temperature == 1.0
