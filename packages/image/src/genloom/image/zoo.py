"""Presets of genloom-image, registered through the `genloom.zoo` entry point."""

from genloom.core.zoo import Preset, WeightSource

_JUDGE_CARD = {
    "license": "Apache-2.0",
    "metric": "held-out class accuracy (see preset.json)",
    "trained_by": "scripts/train_image_judges.py",
}

PRESETS: list[Preset] = [
    Preset(
        name=f"judge-{dataset}",
        family="image.judge",
        modality="image",
        description=f"CNN classifier judging samples of the {dataset} data set (class accuracy, Frechet features)",
        source=WeightSource(kind="package", package="genloom.image", path=f"presets/judge-{dataset}"),
        loader="genloom.image.presets:load_judge_preset",
        card={**_JUDGE_CARD, "data": f"genloom.image.data {dataset} (train split)"},
    )
    for dataset in ("digits", "shapes")
]
