"""Load the official implementations' state_dicts (official key names) into our modules.

`build_baseline(name, config)` builds a supervised baseline from a TSLib config; `load_official(folder)`
reads a folder with `config.json` + `model.safetensors` (the layout of an exported official model, the
same as ../shared/parity/<model>/) and loads with strict key matching, naming missing, unexpected or
mis-shaped keys instead of failing deep inside torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from genloom.timeseries.errors import CheckpointError
from genloom.timeseries.models.config import TSLibConfig

BASELINES = ("dlinear", "patchtst", "itransformer", "informer", "autoformer")
OFFICIAL_CLASS_NAMES = {
    "DLinear": "dlinear",
    "PatchTST": "patchtst",
    "iTransformer": "itransformer",
    "Informer": "informer",
    "Autoformer": "autoformer",
    "GPHT": "gpht",
}


def build_baseline(name: str, config: TSLibConfig) -> nn.Module:
    """A freshly initialised baseline by its short name."""
    name = name.lower()
    if name == "dlinear":
        from genloom.timeseries.models.dlinear import DLinear

        return DLinear(config)
    if name == "patchtst":
        from genloom.timeseries.models.patchtst import PatchTST

        return PatchTST(config)
    if name == "itransformer":
        from genloom.timeseries.models.itransformer import ITransformer

        return ITransformer(config)
    if name == "informer":
        from genloom.timeseries.models.informer import Informer

        return Informer(config)
    if name == "autoformer":
        from genloom.timeseries.models.autoformer import Autoformer

        return Autoformer(config)
    raise CheckpointError(f"unknown baseline {name!r}; known: {list(BASELINES)}")


def load_state_dict_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], *, what: str) -> nn.Module:
    """load_state_dict(strict) with an error that lists the offending keys and shapes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            parts.append("shape mismatches " + "; ".join(shapes[:8]))
        raise CheckpointError(f"{what} does not match its architecture: " + ", ".join(parts))
    module.load_state_dict(state_dict, strict=True)
    return module


def model_name_from_config(values: dict[str, Any]) -> str:
    """The short model name of an official config (`model` field or `_model_class` provenance)."""
    raw = values.get("model") or values.get("_model_class", "").split("/")[-1].split(".py")[0]
    name = OFFICIAL_CLASS_NAMES.get(raw, str(raw).lower())
    if name not in (*BASELINES, "gpht"):
        raise CheckpointError(f"cannot tell which model this config is for (model={raw!r})")
    return name


def read_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from an official `checkpoint.pth` (TSLib / GPHT save `model.state_dict()`), read with
    weights_only=True (no unpickling of code); `module.` prefixes of DataParallel runs are stripped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with code objects, or not a torch file at all
        raise CheckpointError(f"{path.name} is not a plain state_dict checkpoint: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name} does not hold a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def convert_official_checkpoint(checkpoint: str | Path, config: dict[str, Any], out: str | Path) -> Path:
    """Official checkpoint.pth + its run config (a dict of the run's args) -> our folder layout
    (config.json + model.safetensors), checked by loading it strictly."""
    import json as _json

    from safetensors.torch import save_file

    state = read_official_checkpoint(checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(_json.dumps(config, indent=2))
    load_official(out)
    return out


def load_official(folder: str | Path, *, name: str | None = None, **overrides: Any) -> nn.Module:
    """Build our module from an official config.json and load the official state_dict, in eval mode."""
    folder = Path(folder)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{folder}: expected {path.name} beside config.json and model.safetensors")
    values = json.loads(config_path.read_text())
    name = (name or model_name_from_config(values)).lower()
    state_dict = load_file(str(weights_path))
    if name == "gpht":
        from genloom.timeseries.models.gpht import GPHT, GPHTConfig

        module: nn.Module = GPHT(GPHTConfig.from_dict(values, **overrides))
    else:
        module = build_baseline(name, TSLibConfig.from_dict(values, **overrides))
    return load_state_dict_strict(module, state_dict, what=f"{folder.name}/model.safetensors").eval()
