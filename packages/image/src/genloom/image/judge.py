"""The judge of generated images: a small CNN classifier per data set, and a Frechet distance in its features.

Class accuracy asks "did the model draw the class it was asked for"; the Frechet distance between the
feature statistics of samples and of held-out real images (as FID does with Inception) asks "do the
samples look like the data, with its variety". Judges are trained by `train_classifier` and shipped as
presets `judge-digits` and `judge-shapes`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.core.zoo import read_config, register_family
from genloom.image.data import ImageDataset
from genloom.image.errors import ImageInputError
from genloom.image.io import load_component_of, save_component

JUDGE_FAMILY = "image.judge"


@dataclass
class ClassifierConfig:
    """Architecture of the judge CNN (three conv stages, global average pool, linear head)."""

    in_channels: int = 3
    num_classes: int = 10
    image_size: int = 32
    width: int = 32
    feature_dim: int = 128


class ImageClassifier(nn.Module):
    """conv-BN-ReLU x2 per stage, 3 stages with 2x pooling, then a `feature_dim` embedding used for Frechet."""

    def __init__(self, config: ClassifierConfig | None = None, **overrides) -> None:
        super().__init__()
        self.config = config or ClassifierConfig(**overrides)
        c, w = self.config.in_channels, self.config.width
        layers: list[nn.Module] = []
        for out in (w, 2 * w, 4 * w):
            layers += [
                nn.Conv2d(c, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c = out
        self.trunk = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(c, self.config.feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(self.config.feature_dim, self.config.num_classes)

    def _check(self, images: torch.Tensor) -> None:
        cfg = self.config
        expected = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ImageInputError(
                f"judge expects images of shape (N, {', '.join(map(str, expected))}), got {tuple(images.shape)}"
            )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feature_dim) of images in [-1, 1]."""
        self._check(images)
        return self.embed(self.trunk(images).mean(dim=(2, 3)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def frechet_distance(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D), as in FID.

    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), computed with symmetric eigen
    decompositions (float64), which stays real and stable for the rank-deficient covariances of small sets.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N>=2, D) feature sets of equal D, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eval_a, evec_a = np.linalg.eigh(cov_a)
    sqrt_a = (evec_a * np.sqrt(np.clip(eval_a, 0, None))) @ evec_a.T
    cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)
    return max(value, 0.0)


@dataclass
class JudgeReport:
    """Quality of a batch of conditional samples as seen by a judge."""

    class_accuracy: float
    frechet: float
    num_samples: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class Judge:
    """A trained classifier plus the held-out real images it compares samples with."""

    def __init__(self, classifier: ImageClassifier, class_names: list[str], dataset_name: str) -> None:
        self.classifier = classifier.eval()
        self.class_names = class_names
        self.dataset_name = dataset_name

    @torch.no_grad()
    def features_and_logits(
        self, images: torch.Tensor, *, batch_size: int = 500
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats, logits = [], []
        for chunk in images.split(batch_size):
            f = self.classifier.features(chunk.float())
            feats.append(f)
            logits.append(self.classifier.head(f))
        return torch.cat(feats), torch.cat(logits)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class of each image in [-1, 1]."""
        return self.features_and_logits(images)[1].argmax(-1)

    @torch.no_grad()
    def evaluate(
        self, samples: torch.Tensor, requested: torch.Tensor, reference: torch.Tensor
    ) -> JudgeReport:
        """Class accuracy of `samples` against the `requested` classes and Frechet distance to `reference`."""
        if samples.shape[0] != requested.shape[0]:
            raise ValueError(f"{samples.shape[0]} samples but {requested.shape[0]} requested classes")
        feats, logits = self.features_and_logits(samples)
        ref_feats, _ = self.features_and_logits(reference)
        accuracy = (logits.argmax(-1) == requested.to(logits.device)).float().mean().item()
        return JudgeReport(accuracy, frechet_distance(feats.cpu(), ref_feats.cpu()), int(samples.shape[0]))

    def save(self, folder: str | Path) -> None:
        config = {"family": JUDGE_FAMILY, "dataset": self.dataset_name, "class_names": self.class_names}
        config.update(asdict(self.classifier.config))
        save_component(self.classifier, folder, config)

    @classmethod
    def load(cls, folder: str | Path) -> Judge:
        model = load_component_of(folder, ImageClassifier, family=JUDGE_FAMILY)
        config = read_config(folder)
        return cls(model, config["class_names"], config["dataset"])


def _build_classifier(config: dict[str, Any]) -> ImageClassifier:
    """Zoo builder of the judge family: the classifier (dataset and class names are judge metadata)."""
    return ImageClassifier(ClassifierConfig(**{k: config[k] for k in ClassifierConfig.__dataclass_fields__}))


register_family(JUDGE_FAMILY, _build_classifier)


def _augment(images: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random translations (pad by replication, random crop) so the judge does not key on exact position."""
    if max_shift == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (
        (dy.view(n, 1) + torch.arange(h).view(1, h))
        .view(n, 1, h, 1)
        .expand(n, images.shape[1], h, w + 2 * max_shift)
    )
    cropped = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, images.shape[1], h, w)
    return cropped.gather(3, cols)


def train_classifier(
    train: ImageDataset,
    *,
    epochs: int = 12,
    batch_size: int = 64,
    lr: float = 2e-3,
    max_shift: int = 2,
    seed: int = 0,
    config: ClassifierConfig | None = None,
    log=print,
) -> Judge:
    """Train a judge on `train` with AdamW + cosine schedule and small random shifts; returns the Judge."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    config = config or ClassifierConfig(
        in_channels=train.channels, num_classes=train.num_classes, image_size=train.image_size
    )
    model = ImageClassifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total, correct, loss_sum = 0, 0, 0.0
        for idx in order.split(batch_size):
            x = _augment(train.images[idx], generator, max_shift)
            y = train.labels[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(-1) == y).sum().item()
            total += len(idx)
        log(
            f"epoch {epoch + 1}/{epochs} loss {loss_sum / total:.4f} train acc {correct / total:.4f} ({time.time() - start:.0f}s)"
        )
    return Judge(model.eval(), list(train.class_names), train.name)
