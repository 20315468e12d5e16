"""Writing image grids as PNG files, atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from genloom.core.io import atomic_path


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int | None = None, scale: int = 2) -> Path:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid (nearest-upscaled `scale` times for viewing)."""
    path = Path(path)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got {tuple(images.shape)}")
    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    grid = make_grid(
        (images.detach().cpu().float().clamp(-1, 1) + 1) / 2, nrow=nrow, padding=2, pad_value=1.0
    )
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path
