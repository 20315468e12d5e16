"""Reading official checkpoints safely and loading renamed weights into our modules.

Official `.pth` / `.pt` / `.ckpt` files go through core's `safe_torch_load` (`torch.load(weights_only=True)`
with an allow-list), so a file that pickles extra objects is read without executing code; `.safetensors`
files are read directly. Training wrappers ({"model": ..., "model_ema": ...}) are unwrapped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn as nn

from genloom.core.io import load_safetensors, safe_torch_load
from genloom.image.errors import CheckpointError

_WRAPPER_KEYS = ("model", "state_dict", "module", "net")
_EMA_KEYS = ("model_ema", "ema", "ema_state_dict")


def unwrap_state_dict(obj: object, *, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint object (EMA weights first when `prefer_ema`)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a checkpoint holding a dict of tensors, got {type(obj).__name__}")
    keys = (_EMA_KEYS + _WRAPPER_KEYS) if prefer_ema else _WRAPPER_KEYS
    for key in keys:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return {k.removeprefix("module."): v for k, v in inner.items()}
    if prefer_ema and not any(isinstance(obj.get(k), Mapping) for k in _EMA_KEYS):
        raise CheckpointError(
            f"checkpoint has no EMA weights (looked for {list(_EMA_KEYS)}); keys: {list(obj)[:8]}"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint holds no tensors; top-level keys: {list(obj)[:8]}")
    return {k.removeprefix("module."): v for k, v in tensors.items()}


def load_official_state_dict(path: str | Path, *, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """Float32 state dict of an official checkpoint file (safetensors or pickled torch file, read safely)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"official checkpoint {path} does not exist")
    raw = load_safetensors(path) if path.suffix == ".safetensors" else safe_torch_load(path)
    state = unwrap_state_dict(raw, prefer_ema=prefer_ema)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def rename_keys(
    state: Mapping[str, torch.Tensor], rules: list[tuple[str, str | Callable]]
) -> dict[str, torch.Tensor]:
    """Apply regex substitution rules in order to every key."""
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def load_converted(module: nn.Module, params: Mapping[str, torch.Tensor], *, source: str) -> nn.Module:
    """Load renamed official weights; every parameter must be provided with its exact shape.

    Buffers the official file lacks (usage counters, step counters) keep our module's fresh values;
    any key our module does not know is an error, so a silent partial load cannot happen.
    """
    own = module.state_dict()
    buffers = {name for name, _ in module.named_buffers()}
    param_names = set(own) - buffers  # state_dict names (a fused layer's parameters keep their file names)
    unexpected = sorted(set(params) - set(own))
    missing = sorted(param_names - set(params))
    if unexpected or missing:
        raise CheckpointError(
            f"{source}: cannot map the checkpoint onto {type(module).__name__}: "
            f"unexpected keys {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}, "
            f"missing parameters {missing[:6]}{'...' if len(missing) > 6 else ''}"
        )
    for name, value in params.items():
        if own[name].shape != value.shape:
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(value.shape)} in the checkpoint, expected {tuple(own[name].shape)}"
            )
    merged = dict(own)
    merged.update({k: v.to(own[k].dtype) for k, v in params.items()})
    module.load_state_dict(merged)
    return module.eval()
