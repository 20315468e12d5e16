"""Procedural 32x32 RGB shapes: class = (shape, colour), random position and size, fully seeded.

A second offline data set whose classes need both geometry and colour, rendered with 4x supersampling so
edges are anti-aliased like real images rather than hard binary masks.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from genloom.image.data.base import ImageDataset

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (1.0, 0.15, 0.1), "green": (0.1, 0.9, 0.2), "blue": (0.15, 0.3, 1.0)}
SHAPES_CLASS_NAMES = [f"{colour} {shape}" for shape in SHAPES for colour in COLOURS]
SPLIT_SEEDS = {"train": 0, "test": 1}
SPLIT_SIZES = {"train": 400, "test": 100}  # images per class
SUPERSAMPLE = 4


def _shape_coverage(
    shape: str, cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor, size: int
) -> torch.Tensor:
    """Fraction of each pixel covered by the shape, (N, size, size), via supersampled inside tests."""
    fine = size * SUPERSAMPLE
    coords = (torch.arange(fine, dtype=torch.float32) + 0.5) / SUPERSAMPLE
    y = coords.view(1, fine, 1)
    x = coords.view(1, 1, fine)
    cx, cy, r = cx.view(-1, 1, 1), cy.view(-1, 1, 1), r.view(-1, 1, 1)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        inside = dx**2 + dy**2 <= r**2
    elif shape == "square":
        half = 0.85 * r  # about the same area as the circle of radius r
        inside = (dx.abs() <= half) & (dy.abs() <= half)
    elif shape == "triangle":
        # Upward triangle with apex (cx, cy - r) and base y = cy + 0.8 r from cx - r to cx + r.
        base = 0.8 * r
        inside = (dy <= base) & (dy >= -r) & (dx.abs() <= (dy + r) / (base + r) * r)
    elif shape == "cross":
        arm = r / 3.0
        inside = ((dx.abs() <= r) & (dy.abs() <= arm)) | ((dy.abs() <= r) & (dx.abs() <= arm))
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return F.avg_pool2d(inside.float().unsqueeze(1), SUPERSAMPLE).squeeze(1)


def render_shapes(
    shape: str,
    colour: str,
    n: int,
    *,
    seed: int,
    image_size: int = 32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Render n images of one (shape, colour) class in [-1, 1], shape (n, 3, H, W)."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {list(COLOURS)}")
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    scale = image_size / 32.0
    r = (5.0 + 6.0 * torch.rand(n, generator=gen)) * scale  # radius 5..11 px at 32x32
    margin = r + 1.0 * scale
    cx = margin + torch.rand(n, generator=gen) * (image_size - 2 * margin)
    cy = margin + torch.rand(n, generator=gen) * (image_size - 2 * margin)
    brightness = 0.75 + 0.25 * torch.rand(n, 1, 1, 1, generator=gen)
    background = 0.05 + 0.1 * torch.rand(n, 1, 1, 1, generator=gen)
    rgb = torch.tensor(COLOURS[colour]).view(1, 3, 1, 1) * brightness
    coverage = _shape_coverage(shape, cx, cy, r, image_size).unsqueeze(1)
    image01 = background * (1 - coverage) + rgb * coverage
    return image01 * 2.0 - 1.0


@lru_cache(maxsize=4)
def _render_split(split: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(SPLIT_SEEDS[split])
    images, labels = [], []
    for label, name in enumerate(SHAPES_CLASS_NAMES):
        colour, shape = name.split(" ")
        images.append(
            render_shapes(shape, colour, SPLIT_SIZES[split], seed=0, image_size=image_size, generator=gen)
        )
        labels.append(torch.full((SPLIT_SIZES[split],), label, dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


def load_shapes_dataset(split: str = "train", *, image_size: int = 32) -> ImageDataset:
    """The shapes data set (12 classes = 4 shapes x 3 colours); "train" and "test" use different seeds."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {list(SPLIT_SEEDS)}, got {split!r}")
    images, labels = _render_split(split, image_size)
    return ImageDataset(
        images=images.clone(), labels=labels.clone(), class_names=list(SHAPES_CLASS_NAMES), name="shapes"
    )
