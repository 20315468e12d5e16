"""Demo of genloom-image: writes real outputs from the shipped presets.

One PNG grid of class-conditional samples per shipped generator preset (one row per class, a few samples
each so that the demo stays quick on a CPU), plus a grid
of each built-in data set's held-out images with the shipped judge's predicted classes in the caption.
"""

from __future__ import annotations

from pathlib import Path

import torch

from genloom.core.demo import DemoItem
from genloom.image.data import load_dataset
from genloom.image.grid import save_grid
from genloom.image.presets import PRESETS_DIR, load_judge

SAMPLES_PER_CLASS = 4


def run_demo(out_dir: Path, *, device: str = "cpu") -> list[DemoItem]:
    """Write this package's demo outputs under out_dir."""
    from genloom.image.cli import shipped_generators
    from genloom.image.pipeline import ImagePipeline

    out_dir = Path(out_dir)
    items: list[DemoItem] = []
    for name in shipped_generators():
        pipeline = ImagePipeline.load(PRESETS_DIR / name)
        pipeline.generator.to(device)
        per_class = SAMPLES_PER_CLASS
        labels = torch.arange(len(pipeline.class_names)).repeat_interleave(per_class)
        images = pipeline.sample(labels, seed=0)  # the preset's own guidance and filters
        path = save_grid(images, out_dir / f"image_{name}.png", nrow=per_class)
        items.append(
            DemoItem(
                title=f"{pipeline.family} samples ({name})",
                path=path,
                kind="image",
                caption=f"one row per class: {', '.join(pipeline.class_names)}"
                + _accuracy_note(pipeline.info),
            )
        )
    for dataset in ("digits", "shapes"):
        test = load_dataset(dataset, "test")
        pick = torch.cat([torch.nonzero(test.labels == c).flatten()[:4] for c in range(test.num_classes)])
        predicted = load_judge(dataset).predict(test.images[pick])
        accuracy = (predicted == test.labels[pick]).float().mean().item()
        path = save_grid(test.images[pick], out_dir / f"image_data_{dataset}.png", nrow=8)
        items.append(
            DemoItem(
                title=f"{dataset}: held-out real images",
                path=path,
                kind="image",
                caption=f"built-in offline data set; the shipped judge classifies {accuracy:.0%} of these correctly",
            )
        )
    return items


def _accuracy_note(info: dict) -> str:
    if "class_accuracy" not in info:
        return ""
    return f" (judge class accuracy of this preset: {info['class_accuracy']:.0%})"
