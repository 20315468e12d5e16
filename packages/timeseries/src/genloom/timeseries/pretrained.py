"""Save and load forecaster folders through `genloom.core.zoo`: the preset layout `preset.json`,
`model/config.json` (with `"family": "timeseries.<name>"`), `model/model.safetensors`.

Building a forecaster from its config goes through the families registered in `genloom.timeseries.zoo`,
so `genloom.core.zoo.from_pretrained` loads these folders (and the shipped presets by name) as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genloom.core.errors import ConfigError
from genloom.core.io import atomic_write_json
from genloom.core.zoo import from_pretrained, save_pretrained
from genloom.timeseries.errors import CheckpointError


def save_forecaster(
    model: torch.nn.Module,
    folder: str | Path,
    *,
    preset: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a forecaster with a `config_dict()` method into `folder/model/` (weights in `dtype`), and
    `preset` (name, description, training figures) as `folder/preset.json` when given. Atomic per file."""
    if not hasattr(model, "config_dict"):
        raise ConfigError(f"{type(model).__name__} has no config_dict(): not a genloom forecaster")
    folder = Path(folder)
    original = next(model.parameters()).dtype
    model.to(dtype)
    try:
        save_pretrained(model, folder / "model", config=model.config_dict())
    finally:
        model.to(original)
    if preset is not None:
        atomic_write_json(folder / "preset.json", preset)
    return folder


def load_forecaster(folder_or_name: str | Path, *, device: str = "cpu") -> torch.nn.Module:
    """A forecaster from a preset folder (or a registered preset name), float32, in eval mode."""
    folder = Path(folder_or_name)
    if folder.is_dir() and not (folder / "model" / "config.json").is_file():
        raise CheckpointError(
            f"{folder} is not a forecaster folder: expected model/config.json and model/model.safetensors"
        )
    import genloom.timeseries.zoo  # noqa: F401  (registers the timeseries families)

    model = from_pretrained(folder if folder.is_dir() else str(folder_or_name), device=device)
    return model.float().eval()
