"""Wall-clock budgets of the tokenizer / generator training loops and the multi-scale VQ's dead-code restarts."""

from __future__ import annotations

import time

import torch

from genloom.image.data import ImageDataset
from genloom.image.generator_training import GeneratorTrainConfig, train_generator
from genloom.image.recipes import build_generator, build_tokenizer, sampling_params
from genloom.image.tokenizer_training import ScaleCodeReviver, WallClockCosine


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


def test_scale_code_reviver_reseeds_idle_codes_with_quantized_vectors() -> None:
    tokenizer = build_tokenizer("var", channels=1, size="compact")
    reviver = ScaleCodeReviver(tokenizer, after=2)
    images = _tiny_data(4).images
    only_code_zero = torch.zeros(4, tokenizer.quantize.num_tokens, dtype=torch.long)
    before = tokenizer.quantize.embedding.weight.detach().clone()
    assert reviver.update(images, only_code_zero) == 0
    revived = reviver.update(images, only_code_zero)
    assert revived == tokenizer.vocab_size - 1  # every code but 0 idled 2 steps
    after = tokenizer.quantize.embedding.weight.detach()
    assert torch.equal(after[0], before[0]) and not torch.equal(after[1:], before[1:])
    assert reviver.update(images, only_code_zero) == 0  # the idle counts restart


def test_sampling_params_of_preset_settings() -> None:
    params = sampling_params({"cfg_scale": 2.0, "top_k": 64, "temperature": 0.7})
    assert (params.temperature, params.top_k, params.top_p) == (0.7, 64, None)
    assert sampling_params({}).temperature == 1.0
