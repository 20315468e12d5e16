"""The in-memory class-conditional image data set every genloom-image trainer and judge consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from genloom.image.errors import UnknownClassError


@dataclass
class ImageDataset(Dataset):
    """Images as one float tensor in [-1, 1] of shape (N, C, H, W) with int64 labels (N,).

    The built-in data sets are small (a few thousand 32x32 images), so they live in memory; a torch
    `DataLoader` can iterate this directly (items are `(image, label)` pairs).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str = "images"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def class_index(self, label: int | str) -> int:
        """Resolve a class given as an index or a class name, with a clear error when it does not exist."""
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in self.class_names:
                raise UnknownClassError(
                    f"unknown class {label!r} for data set {self.name!r}; expected one of {self.class_names}"
                )
            return self.class_names.index(label)
        index = int(label)
        if not 0 <= index < self.num_classes:
            raise UnknownClassError(
                f"class {index} is out of range for data set {self.name!r}: expected 0..{self.num_classes - 1}"
            )
        return index


def stratified_split(
    labels: torch.Tensor, *, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a deterministic per-class train / held-out split (same seed, same split everywhere)."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n_test = max(1, round(idx.numel() * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values
