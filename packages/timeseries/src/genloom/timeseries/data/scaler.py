"""Per-column standardisation fitted on the training rows only (the protocol's StandardScaler)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StandardScaler:
    """z = (x - mean) / scale with the population std (ddof 0); a zero std is treated as 1, as sklearn does."""

    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    def fit(self, values: np.ndarray) -> StandardScaler:
        values = np.asarray(values, dtype=np.float64)
        self.mean = values.mean(axis=0)
        std = values.std(axis=0)
        self.scale = np.where(std == 0.0, 1.0, std)
        return self

    @property
    def var(self) -> np.ndarray:
        return self.scale**2

    def transform(self, values: np.ndarray) -> np.ndarray:
        self._check()
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.scale

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        self._check()
        return np.asarray(values, dtype=np.float64) * self.scale + self.mean

    def _check(self) -> None:
        if self.mean is None or self.scale is None:
            raise RuntimeError("StandardScaler used before fit()")
