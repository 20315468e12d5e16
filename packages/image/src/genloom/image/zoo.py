"""Presets of genloom-image, registered through the `genloom.zoo` entry point.

Shipped folders (judges, and trained generator presets once `scripts/train_image_presets.py` has been run
and its folders copied under `presets/`) plus converter presets for the official VAR / LlamaGen / MAR files.
"""

from pathlib import Path

from genloom.core.zoo import Preset, WeightSource
from genloom.image import judge, pipeline  # noqa: F401  (importing them registers every image family)
from genloom.image.io import read_family
from genloom.image.official import OFFICIAL_CHECKPOINTS
from genloom.image.presets import shipped_generator_names

_PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def _shipped_generators() -> list[Preset]:
    presets = []
    for folder in (_PRESETS_DIR / name for name in shipped_generator_names(_PRESETS_DIR)):
        kind = folder.name.split("-")[0]
        presets.append(
            Preset(
                name=folder.name,
                family=read_family(folder / "model"),
                modality="image",
                description=f"{kind} generator trained on the built-in data set, with its tokenizer",
                source=WeightSource(kind="package", package="genloom.image", path=f"presets/{folder.name}"),
                loader="genloom.image.pipeline:ImagePipeline.load",
                card={"license": "Apache-2.0", "trained_by": "scripts/train_image_presets.py"},
            )
        )
    return presets


PRESETS: list[Preset] = [
    *(
        Preset(
            name=f"judge-{dataset}",
            family="image.judge",
            modality="image",
            description=f"CNN classifier judging samples of the {dataset} data set (class accuracy, Frechet features)",
            source=WeightSource(kind="package", package="genloom.image", path=f"presets/judge-{dataset}"),
            loader="genloom.image.presets:load_judge_preset",
            card={
                "license": "Apache-2.0",
                "data": f"genloom.image.data {dataset} (train split)",
                "metric": "held-out class accuracy (preset.json)",
                "trained_by": "scripts/train_image_judges.py",
            },
        )
        for dataset in ("digits", "shapes")
    ),
    *_shipped_generators(),
    *(
        Preset(
            name=entry.name,
            family=entry.family,
            modality="image",
            description=entry.description,
            source=WeightSource(
                kind="converter",
                url=entry.url,
                filename=entry.filename,
                converter="genloom.image.official:convert_official_preset",
            ),
            config=dict(entry.kwargs),
            card={
                "source": entry.url,
                "note": "converted offline from a local copy of the official file; no sha256 pinned",
            },
        )
        for entry in OFFICIAL_CHECKPOINTS.values()
    ),
]
