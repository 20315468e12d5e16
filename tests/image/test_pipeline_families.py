"""Every family's preset recipe round-trips through a preset folder and samples images of the right shape."""

from __future__ import annotations

import pytest
import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.image.data import load_dataset
from genloom.image.errors import CheckpointError
from genloom.image.evaluation import score_pipeline
from genloom.image.pipeline import ImagePipeline
from genloom.image.presets import load_judge
from genloom.image.recipes import DEFAULT_SAMPLING, FAMILIES, build_generator, build_tokenizer


@pytest.mark.parametrize("family", FAMILIES)
def test_recipe_pipeline_saves_loads_and_samples(family: str, tmp_path) -> None:
    tokenizer = build_tokenizer(family, 1)
    generator = build_generator(family, num_classes=10, tokenizer=tokenizer)
    info = {**DEFAULT_SAMPLING[family], "steps": 2, "num_iter": 2}
    pipeline = ImagePipeline(tokenizer, generator, class_names=[str(i) for i in range(10)], info=info)
    pipeline.save(tmp_path / family)
    for name in ("tokenizer", "model"):
        assert (tmp_path / family / name / "model.safetensors").stat().st_size < 5_000_000
    loaded = ImagePipeline.load(tmp_path / family)
    assert loaded.family == family
    images = loaded.sample(torch.tensor([3, 7]), cfg_scale=2.0, sampling=SamplingParams(top_k=8), seed=0)
    assert images.shape == (2, 1, 32, 32) and images.abs().max() <= 1 and torch.isfinite(images).all()
    again = ImagePipeline.load(tmp_path / family).sample(
        torch.tensor([3, 7]), cfg_scale=2.0, sampling=SamplingParams(top_k=8), seed=0
    )
    torch.testing.assert_close(images, again)
    score = score_pipeline(
        loaded, load_judge("digits"), load_dataset("digits", "test"), samples_per_class=1, cfg_scale=2.0
    )
    assert score.num_samples == 10 and 0.0 <= score.class_accuracy <= 1.0 and score.frechet > 0
    assert score.sampling_steps == {"ar": 64, "var": 6, "maskgit": 2, "mar": 2 * 51}[family]


def test_a_generator_with_the_wrong_tokenizer_is_refused() -> None:
    tokenizer = build_tokenizer("mar", 1)
    with pytest.raises(CheckpointError, match="needs a VQAutoencoder"):
        ImagePipeline(
            tokenizer,
            build_generator("ar", num_classes=10, tokenizer=build_tokenizer("ar", 1)),
            class_names=["a"],
        )


def test_a_mar_pipeline_samples_with_its_preset_settings() -> None:
    tokenizer = build_tokenizer("mar", 1, size="compact")
    generator = build_generator("mar", num_classes=10, tokenizer=tokenizer, size="compact")
    info = {"cfg_scale": 3.0, "cfg_schedule": "constant", "num_iter": 3, "clip_x0": 6.0}
    pipeline = ImagePipeline(tokenizer, generator, class_names=[str(i) for i in range(10)], info=info)
    seen = {}

    def fake_generate(labels, **kwargs):
        seen.update(kwargs)
        return torch.zeros(len(labels), generator.seq_len, generator.config.token_dim)

    generator.generate = fake_generate
    pipeline.sample(torch.tensor([1, 2]), cfg_scale=3.0, seed=0)
    assert (seen["cfg_schedule"], seen["num_iter"], seen["clip_x0"], seen["cfg_scale"]) == (
        "constant",
        3,
        6.0,
        3.0,
    )


def test_pipeline_defaults_are_the_presets_sampling_settings() -> None:
    # CLI, demo, bench and scoring all sample with the preset's stored guidance and filters unless told otherwise
    from genloom.image.presets import PRESETS_DIR

    pipeline = ImagePipeline.load(PRESETS_DIR / "ar-digits")
    pipeline.info.update({"cfg_scale": 3.5, "top_k": 7, "top_p": 0.9, "temperature": 0.8})
    assert pipeline.default_cfg_scale == 3.5
    assert pipeline.default_sampling() == SamplingParams(temperature=0.8, top_k=7, top_p=0.9)
    assert pipeline.default_sampling(top_k=3, top_p=None) == SamplingParams(
        temperature=0.8, top_k=3, top_p=0.9
    )
    labels = torch.tensor([1, 4])
    implicit = pipeline.sample(labels, seed=2)
    explicit = pipeline.sample(
        labels, cfg_scale=3.5, sampling=SamplingParams(temperature=0.8, top_k=7, top_p=0.9), seed=2
    )
    torch.testing.assert_close(implicit, explicit, atol=0, rtol=0)
    other = pipeline.sample(labels, cfg_scale=1.0, sampling=SamplingParams(), seed=2)
    assert not torch.equal(implicit, other)
