"""Judges: shipped classifiers recognise held-out real images; the Frechet distance behaves as FID does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genloom.image.data import load_dataset
from genloom.image.errors import CheckpointError, ImageInputError
from genloom.image.judge import ClassifierConfig, ImageClassifier, Judge, frechet_distance
from genloom.image.presets import load_judge, shipped_preset_dir


@pytest.mark.parametrize("dataset", ["digits", "shapes"])
def test_shipped_judge_classifies_held_out_real_images(dataset: str) -> None:
    judge = load_judge(dataset)
    test = load_dataset(dataset, "test")
    accuracy = (judge.predict(test.images) == test.labels).float().mean().item()
    assert accuracy > 0.97, f"{dataset} judge accuracy {accuracy:.3f}"


def test_judge_report_separates_real_images_from_noise() -> None:
    judge = load_judge("digits")
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    real = judge.evaluate(train.images[:359], train.labels[:359], test.images)
    noise = judge.evaluate(torch.rand(359, 1, 32, 32) * 2 - 1, train.labels[:359], test.images)
    assert real.class_accuracy > 0.97
    assert noise.class_accuracy < 0.3
    assert noise.frechet > 10 * real.frechet


def test_frechet_distance_matches_the_closed_form_for_gaussians() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, size=(20000, 2))
    b = rng.normal([1.0, -2.0], [2.0, 1.0], size=(20000, 2))
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 = 5 + 1 = 6
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="equal D"):
        frechet_distance(a, b[:, :1])


def test_judge_rejects_wrong_image_shape_and_wrong_family(tmp_path) -> None:
    judge = load_judge("shapes")
    with pytest.raises(ImageInputError, match=r"\(N, 3, 32, 32\)"):
        judge.predict(torch.zeros(2, 1, 32, 32))
    Judge(ImageClassifier(ClassifierConfig(num_classes=3)), ["a", "b", "c"], "toy").save(tmp_path / "judge")
    assert Judge.load(tmp_path / "judge").class_names == ["a", "b", "c"]
    with pytest.raises(CheckpointError, match="expected family 'image.tokenizer.vq'"):
        from genloom.image.tokenizers import VQAutoencoder

        VQAutoencoder.from_pretrained(tmp_path / "judge")
    assert (shipped_preset_dir("judge-digits") / "model" / "model.safetensors").stat().st_size < 5_000_000
