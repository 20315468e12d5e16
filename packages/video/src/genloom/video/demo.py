"""Demo of genloom-video.

No trained video preset ships yet, so the demo writes the package's offline training data (moving-shape
clips as GIFs) and says so; trained autoregressive video presets replace it when they land.
"""

from pathlib import Path

import numpy as np

from genloom.core.demo import DemoItem
from genloom.video.moving_shapes import moving_shape_clip
from genloom.video.video_io import write_gif


def run_demo(out_dir: Path, *, device: str = "cpu") -> list[DemoItem]:
    """Write three moving-shape clips as GIFs under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        clip = moving_shape_clip(rng, frames=24)
        path = write_gif(out_dir / f"moving_shape_{i}.gif", clip.frames, fps=8, scale=4)
        caption = f"offline training data, not model output (no trained video preset yet); class {clip.label}"
        items.append(DemoItem(f"moving shape clip {i}", path, "video", caption))
    return items
