"""Writing image grids as PNG files, atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from genloom.core.io import atomic_path


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got {tuple(images.shape)}")


def _save_png(picture: torch.Tensor, path: Path, scale: int) -> Path:
    """One (C, H, W) picture in [0, 1] as a PNG, nearest-upscaled `scale` times, written atomically."""
    array = (picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int | None = None, scale: int = 2) -> Path:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid (nearest-upscaled `scale` times for viewing)."""
    _check_images(images)
    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    grid = make_grid(
        (images.detach().cpu().float().clamp(-1, 1) + 1) / 2, nrow=nrow, padding=2, pad_value=1.0
    )
    return _save_png(grid, Path(path), scale)


def save_images(
    images: torch.Tensor, folder: str | Path, *, first_index: int = 0, scale: int = 1
) -> list[str]:
    """Save images (N, C, H, W) in [-1, 1] one PNG each, `sample-<index>.png` from `first_index`; their names."""
    _check_images(images)
    pictures = (images.detach().cpu().float().clamp(-1, 1) + 1) / 2
    names = [f"sample-{first_index + i:06d}.png" for i in range(images.shape[0])]
    for picture, name in zip(pictures, names, strict=True):
        _save_png(picture, Path(folder) / name, scale)
    return names


def read_images(paths: list[str | Path]) -> torch.Tensor:
    """PNG files of one size (as `save_images` writes them) back as (N, 3, H, W) in [-1, 1]."""
    arrays = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1
