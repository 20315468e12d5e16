"""Class-label embedding with an extra "null" row for classifier-free guidance (LlamaGen / DiT LabelEmbedder)."""

from __future__ import annotations

import torch
import torch.nn as nn

from genloom.image.errors import UnknownClassError


class ClassEmbedding(nn.Module):
    """num_classes + 1 rows; row `num_classes` is the unconditional class. In training, labels are replaced
    by the null class with probability `dropout` so one model learns both branches CFG needs."""

    def __init__(self, num_classes: int, dim: int, *, dropout: float = 0.1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout = dropout
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def check(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels as int64 (B,), each in 0..num_classes (the last being the null class)."""
        labels = torch.as_tensor(labels)
        if labels.dtype.is_floating_point or labels.ndim != 1:
            raise UnknownClassError(
                f"labels must be an integer tensor (B,), got {labels.dtype} {tuple(labels.shape)}"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() > self.num_classes):
            raise UnknownClassError(
                f"class labels must lie in 0..{self.num_classes - 1} (or {self.num_classes} for unconditional), "
                f"got values in {labels.min().item()}..{labels.max().item()}"
            )
        return labels.long()

    def forward(self, labels: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        labels = self.check(labels).to(self.embedding_table.weight.device)
        if self.training and self.dropout > 0:
            drop = torch.rand(labels.shape, generator=generator, device=labels.device) < self.dropout
            labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        return self.embedding_table(labels)
