"""Reading and writing model folders: `config.json` + `model.safetensors`, written atomically.

Every module we save is a `(config dict, state_dict)` pair; the config names the model `family` so a
checkpoint of the wrong family gives a clear error instead of a shape mismatch deep inside torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genloom.core.io import atomic_save_safetensors, atomic_write_json, load_safetensors
from genloom.image.errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (core's temp-file-then-rename), creating the folder first."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)


def save_model_folder(
    folder: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    *,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Save `config.json` and `model.safetensors` (floating tensors cast to `dtype`) under folder."""
    folder = Path(folder)
    tensors = {
        k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in state_dict.items()
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(tensors, folder / WEIGHTS_NAME)
    write_json(folder / CONFIG_NAME, config)


def load_model_folder(
    folder: str | Path, *, family: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read `(config, float32 state_dict)` from folder; check `config["family"]` when `family` is given."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(
            f"{folder} is not a model folder: expected {CONFIG_NAME} and {WEIGHTS_NAME} in it"
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path} is not valid JSON: {err}") from err
    if family is not None and config.get("family") != family:
        raise CheckpointError(
            f"{folder} holds a model of family {config.get('family')!r}, expected family {family!r}"
        )
    state = {
        k: (v.float() if v.is_floating_point() else v) for k, v in load_safetensors(weights_path).items()
    }
    return config, state
