"""Save and load pretrained forecaster folders: `preset.json`, `model/config.json`,
`model/model.safetensors` (the preset layout of the design map). Writes are atomic (temp, then rename).

(`genloom.core.zoo.save_pretrained/from_pretrained` are planned; these two functions can delegate to them.)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from genloom.timeseries.errors import CheckpointError


def publish_file(tmp: str, path: Path) -> None:
    """Give a finished temp file normal permissions and move it into place (atomic on one filesystem)."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    publish_file(tmp, path)


def save_forecaster(
    model: torch.nn.Module,
    folder: str | Path,
    *,
    preset: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a forecaster with a `config_dict()` method into `folder` (weights in `dtype`)."""
    folder = Path(folder)
    (folder / "model").mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    fd, tmp = tempfile.mkstemp(dir=folder / "model", prefix=".model.", suffix=".safetensors")
    os.close(fd)
    save_file(state, tmp)
    publish_file(tmp, folder / "model" / "model.safetensors")
    _atomic_write_text(folder / "model" / "config.json", json.dumps(model.config_dict(), indent=2))
    if preset is not None:
        _atomic_write_text(folder / "preset.json", json.dumps(preset, indent=2))
    return folder


def load_forecaster(folder: str | Path, *, device: str = "cpu") -> torch.nn.Module:
    """Build the forecaster named by `model/config.json` (its `family`) and load its weights, in eval mode."""
    folder = Path(folder)
    config_path, weights_path = folder / "model" / "config.json", folder / "model" / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(
            f"{folder} is not a forecaster folder: expected model/config.json and model/model.safetensors"
        )
    config = json.loads(config_path.read_text())
    family = config.get("family")
    if family == "timeseries.tokenized_ar":
        from genloom.timeseries.models.tokenized_ar import TokenizedARForecaster

        model = TokenizedARForecaster.from_config_dict(config)
    elif family == "timeseries.diffusion":
        from genloom.timeseries.models.diffusion import DiffusionForecaster

        model = DiffusionForecaster.from_config_dict(config)
    else:
        raise CheckpointError(f"{config_path}: unknown forecaster family {family!r}")
    state = {k: v.float() for k, v in load_file(str(weights_path)).items()}
    from genloom.timeseries.models.official import load_state_dict_strict

    load_state_dict_strict(model, state, what=str(weights_path))
    return model.to(device).eval()
