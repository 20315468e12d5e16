"""Moving shapes: an offline video data source whose motion is known exactly.

Each clip shows one coloured square or disc that moves with constant velocity and bounces off the frame
edges. The true centre per frame is returned with the clip, so a video model trained on these clips can
be judged by whether its frames move as the physics says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS = np.array([[230, 60, 60], [60, 200, 80], [70, 110, 240], [240, 200, 40]], dtype=np.uint8)
SHAPES = ("square", "disc")


@dataclass(frozen=True)
class Clip:
    """frames uint8 [T, H, W, 3]; centres float [T, 2] as (row, col); class = shape * n_colours + colour."""

    frames: np.ndarray
    centres: np.ndarray
    label: int


def _bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect positions into [low, high] (a ball bouncing between two walls)."""
    span = high - low
    folded = np.mod(position - low, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def moving_shape_clip(
    rng: np.random.Generator, *, frames: int = 16, size: int = 32, radius: int = 4, max_speed: float = 2.0
) -> Clip:
    """Render one clip of a shape moving at a random constant velocity (pixels per frame)."""
    if frames < 1 or size < 4 * radius or radius < 1:
        raise ValueError(
            f"need frames >= 1, radius >= 1 and size >= 4*radius; got {frames}, {size}, {radius}"
        )
    shape, colour = int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS)))
    start = rng.uniform(radius, size - 1 - radius, size=2)
    velocity = rng.uniform(-max_speed, max_speed, size=2)
    steps = np.arange(frames)[:, None]
    centres = _bounce(start + steps * velocity, radius, size - 1 - radius)
    rows, cols = np.mgrid[0:size, 0:size]
    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    for t, (r, c) in enumerate(centres):
        if SHAPES[shape] == "square":
            inside = (np.abs(rows - r) <= radius) & (np.abs(cols - c) <= radius)
        else:
            inside = (rows - r) ** 2 + (cols - c) ** 2 <= radius**2
        video[t][inside] = COLOURS[colour]
    return Clip(frames=video, centres=centres, label=shape * len(COLOURS) + colour)


def frame_centroids(frames: np.ndarray) -> np.ndarray:
    """Centre of mass (row, col) of the non-black pixels of each frame; NaN for an empty frame."""
    mask = frames.max(axis=-1) > 0
    rows, cols = np.mgrid[0 : frames.shape[1], 0 : frames.shape[2]]
    counts = mask.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (mask * rows).sum(axis=(1, 2)) / counts
        c = (mask * cols).sum(axis=(1, 2)) / counts
    return np.stack([r, c], axis=1)
