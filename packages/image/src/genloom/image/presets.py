"""Locating the presets shipped inside genloom-image (`presets/<name>/`) and loading them offline."""

from __future__ import annotations

from pathlib import Path

from genloom.core.errors import UnknownPresetError
from genloom.image.judge import Judge

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def shipped_preset_dir(name: str) -> Path:
    """Folder of a preset shipped in the package; a clear error listing the shipped names otherwise."""
    folder = PRESETS_DIR / name
    if not (folder / "preset.json").is_file():
        shipped = (
            sorted(p.name for p in PRESETS_DIR.iterdir() if (p / "preset.json").is_file())
            if PRESETS_DIR.is_dir()
            else []
        )
        raise UnknownPresetError(name, shipped, what="shipped image preset")
    return folder


def load_judge(dataset: str) -> Judge:
    """The shipped judge classifier of a built-in data set ("digits" or "shapes")."""
    return Judge.load(shipped_preset_dir(f"judge-{dataset}") / "model")


def load_judge_preset(folder: str | Path) -> Judge:
    """Zoo loader: a judge from a preset folder (`<folder>/model`)."""
    return Judge.load(Path(folder) / "model")
