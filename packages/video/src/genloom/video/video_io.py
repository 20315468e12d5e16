"""Video files users can open: animated GIF writing (Pillow), atomic."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 8.0, scale: int = 1) -> Path:
    """Write uint8 frames [T, H, W, 3] as a looping GIF; `scale` enlarges pixels for viewing."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {path.parent} does not exist")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    images = [Image.fromarray(f) for f in frames]
    if scale > 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    tmp = path.with_name(path.name + ".tmp")
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
    )
    os.replace(tmp, path)
    return path
