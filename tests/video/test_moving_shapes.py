"""The moving-shapes source moves as it says, and GIFs are written whole."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genloom.video.demo import run_demo
from genloom.video.moving_shapes import frame_centroids, moving_shape_clip
from genloom.video.video_io import write_gif


def test_rendered_centre_follows_the_true_trajectory() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        clip = moving_shape_clip(rng, frames=20, size=32, radius=4)
        err = np.abs(frame_centroids(clip.frames) - clip.centres).max()
        assert err < 0.75, err  # rasterisation moves the centroid by under a pixel
        lo, hi = clip.centres.min(), clip.centres.max()
        assert lo >= 4 - 1e-9 and hi <= 27 + 1e-9  # bounces keep the shape inside the frame


def test_gif_has_every_frame(tmp_path: Path) -> None:
    clip = moving_shape_clip(np.random.default_rng(0), frames=10)
    path = write_gif(tmp_path / "c.gif", clip.frames, scale=2)
    with Image.open(path) as im:
        assert im.n_frames == 10 and im.size == (64, 64)
    with pytest.raises(ValueError, match="uint8"):
        write_gif(tmp_path / "bad.gif", clip.frames.astype(np.float32))
    with pytest.raises(FileNotFoundError):
        write_gif(tmp_path / "nope" / "c.gif", clip.frames)


def test_demo_writes_gifs(tmp_path: Path) -> None:
    items = run_demo(tmp_path)
    assert len(items) == 3 and all(i.path.suffix == ".gif" and i.path.is_file() for i in items)
