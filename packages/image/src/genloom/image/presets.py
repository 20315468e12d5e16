"""Locating the presets shipped inside genloom-image (`presets/<name>/`) and loading them offline."""

from __future__ import annotations

import json
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


def is_generator_preset(folder: Path) -> bool:
    """A generator preset folder: `model/` plus its own `tokenizer/` or a `preset.json` naming the preset
    whose tokenizer it uses (`tokenizer_from`; resolved, with a clear error if missing, when loading)."""
    if not (folder / "model").is_dir():
        return False
    if (folder / "tokenizer").is_dir():
        return True
    try:
        return "tokenizer_from" in json.loads((folder / "preset.json").read_text())
    except (OSError, ValueError):
        return False


def shipped_generator_names(presets_dir: Path = PRESETS_DIR) -> list[str]:
    """Names of the generator presets shipped in the package (sorted)."""
    if not presets_dir.is_dir():
        return []
    return sorted(p.name for p in presets_dir.iterdir() if is_generator_preset(p))


def load_judge(dataset: str) -> Judge:
    """The shipped judge classifier of a built-in data set ("digits" or "shapes")."""
    return Judge.load(shipped_preset_dir(f"judge-{dataset}") / "model")


def load_judge_preset(folder: str | Path) -> Judge:
    """Zoo loader: a judge from a preset folder (`<folder>/model`)."""
    return Judge.load(Path(folder) / "model")
