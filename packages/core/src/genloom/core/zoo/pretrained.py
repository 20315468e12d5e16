"""save_pretrained / from_pretrained: a module as `config.json` (with its family) + `model.safetensors`.

A component folder holds `config.json` (JSON, with `"family": "image.var"` naming the builder) and
`model.safetensors`. A preset folder (STYLE.md #7) holds `preset.json` plus one component folder per part:
`model/` and optionally `tokenizer/`. Loading builds the module from the config through the family
registry, checks every tensor shape of the file against the built module before copying anything, and
reports the first mismatching key with both shapes, and the missing / unexpected keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genloom.core.errors import CheckpointError, ConfigError, UnknownPresetError
from genloom.core.io import (
    atomic_save_safetensors,
    atomic_write_bytes,
    atomic_write_json,
    load_safetensors,
    read_json,
    safetensors_shapes,
)
from genloom.core.zoo.preset import Preset
from genloom.core.zoo.registry import get_family, get_preset
from genloom.core.zoo.sources import resolve_preset_dir, write_preset_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PRESET_INFO_NAME = "preset.json"
FORMAT_VERSION = 1
_BOOKKEEPING_KEYS = ("family", "format_version")

ExtraFile = bytes | str | Mapping[str, Any] | list[Any]


def _shared_groups(module: nn.Module) -> list[list[str]]:
    """State-dict keys that share one storage (tied weights), grouped, in state-dict order."""
    groups: dict[tuple[int, int, tuple[int, ...]], list[str]] = {}
    for name, tensor in module.state_dict(keep_vars=False).items():
        if tensor.device.type == "meta" or tensor.numel() == 0:
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        groups.setdefault(key, []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def module_state_for_saving(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict with tied duplicates dropped (safetensors refuses shared storage)."""
    state = dict(module.state_dict())
    for names in _shared_groups(module):
        for alias in names[1:]:
            state.pop(alias, None)
    return state


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    config: Mapping[str, Any],
    extra_files: Mapping[str, ExtraFile] | None = None,
) -> Path:
    """Write `directory/config.json` and `directory/model.safetensors` (each atomically).

    `config` must be JSON-able and carry `"family"`; `from_pretrained` passes the rest to that family's
    builder. `extra_files` maps a file name inside `directory` to bytes, text, or a JSON-able object.
    """
    family = config.get("family")
    if not isinstance(family, str) or not family:
        raise ConfigError('save_pretrained: config must carry a "family" string, for example "image.var"')
    try:
        config_text = json.dumps({**config, "format_version": FORMAT_VERSION}, indent=2, sort_keys=True)
    except TypeError as exc:
        raise ConfigError(f"save_pretrained: config is not JSON-able: {exc}") from None
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(
        module_state_for_saving(model), directory / WEIGHTS_NAME, metadata={"family": family, "format": "pt"}
    )
    for name, content in (extra_files or {}).items():
        target = directory / name
        if not target.resolve().is_relative_to(directory.resolve()):
            raise ConfigError(f"save_pretrained: extra file {name!r} would be written outside {directory}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            atomic_write_bytes(target, content)
        elif isinstance(content, str):
            atomic_write_bytes(target, content.encode("utf-8"))
        else:
            atomic_write_json(target, content)
    # config last: a folder with a config.json is a complete one
    atomic_write_bytes(directory / CONFIG_NAME, (config_text + "\n").encode("utf-8"))
    return directory


def save_preset_folder(
    directory: str | os.PathLike[str],
    *,
    preset: Preset,
    model: nn.Module,
    model_config: Mapping[str, Any],
    tokenizer: nn.Module | None = None,
    tokenizer_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write a whole preset folder: `preset.json`, `model/`, and `tokenizer/` when a tokenizer is given."""
    directory = Path(directory).expanduser()
    save_pretrained(model, directory / "model", config=model_config)
    if tokenizer is not None:
        if tokenizer_config is None:
            raise ConfigError("save_preset_folder: a tokenizer needs its tokenizer_config")
        save_pretrained(tokenizer, directory / "tokenizer", config=tokenizer_config)
    write_preset_json(directory, preset)
    return directory


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check `directory/config.json`: a JSON object with a "family" string."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{directory} has no {CONFIG_NAME} (expected a folder written by save_pretrained)")
    try:
        config = read_json(path, what="config")
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(config).__name__}")
    if not isinstance(config.get("family"), str):
        raise ConfigError(f'{path} has no "family" string naming the model family')
    version = config.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ConfigError(f"{path} has format_version {version!r}; this genloom reads up to {FORMAT_VERSION}")
    return config


def build_from_config(config: Mapping[str, Any], *, source: str = "config") -> nn.Module:
    """Build a module with the builder of `config["family"]` (the rest of the config is its argument)."""
    family = config.get("family")
    try:
        builder = get_family(str(family))
    except UnknownPresetError as exc:
        hint = str(exc).split("; ", 1)[1]
        raise ConfigError(f"{source} names unknown model family {family!r}; {hint}") from None
    arguments = {k: v for k, v in config.items() if k not in _BOOKKEEPING_KEYS}
    try:
        module = builder(arguments)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"{source}: cannot build family {family!r} from this config: {exc}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"the builder of family {family!r} returned {type(module).__name__}, not an nn.Module"
        )
    return module


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def check_state_shapes(
    module: nn.Module, file_shapes: Mapping[str, tuple[int, ...]], *, path: Path, strict: bool = True
) -> None:
    """Compare the file's tensor shapes with the module's; raise CheckpointError on the first mismatch.

    Tied (shared-storage) keys absent from the file are fine: loading one of them fills the others.
    """
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    mismatches = [n for n in expected if n in file_shapes and tuple(file_shapes[n]) != expected[n]]
    if mismatches:
        first = mismatches[0]
        raise CheckpointError(
            f"{path} does not fit the model built from its config: key {first!r} expects shape "
            f"{list(expected[first])}, file has {list(file_shapes[first])}"
            + (f" ({len(mismatches)} mismatching keys in all)" if len(mismatches) > 1 else "")
        )
    tied_ok: set[str] = set()
    for names in _shared_groups(module):
        if any(n in file_shapes for n in names):
            tied_ok.update(names)
    missing = [n for n in expected if n not in file_shapes and n not in tied_ok]
    unexpected = [n for n in file_shapes if n not in expected]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_preview(unexpected)}")
        raise CheckpointError(f"{path} does not match the model built from its config; " + "; ".join(parts))


def load_weights_into(module: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> nn.Module:
    """Load a safetensors file into `module` after checking shapes and keys (see check_state_shapes)."""
    path = Path(path)
    shapes = {name: shape for name, (shape, _) in safetensors_shapes(path).items()}
    check_state_shapes(module, shapes, path=path, strict=strict)
    state = load_safetensors(path)
    module.load_state_dict(state, strict=False)
    return module


def load_component(
    directory: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    strict: bool = True,
) -> nn.Module:
    """Build and load one component folder (`config.json` + `model.safetensors`), in eval mode."""
    directory = Path(directory)
    config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    safetensors_shapes(weights)  # a missing or truncated file is reported before building anything
    module = build_from_config(config, source=str(directory / CONFIG_NAME))
    load_weights_into(module, weights, strict=strict)
    return module.to(device=device, dtype=dtype).eval()


def component_dir(folder: str | os.PathLike[str], component: str) -> Path:
    """The folder holding `component` ("model", "tokenizer") of a preset or single-component folder.

    A preset may share a part with a sibling preset instead of storing a byte-identical copy: its
    `preset.json` then names that preset in `"<component>_from"` (e.g. `"tokenizer_from": "ar-digits"`),
    and the part is read from `<folder>/../ar-digits/<component>/`. The referenced preset must hold the part
    itself (one level, no chains); a missing one is a ConfigError naming both presets."""
    folder = Path(folder)
    if (folder / CONFIG_NAME).is_file() and component == "model":
        return folder
    if (folder / CONFIG_NAME).is_file():
        raise ConfigError(f"{folder} is a single-component folder; it has no {component!r} part")
    sub = folder / component
    shared = shared_component_source(folder, component)
    if shared is not None:
        if (sub / CONFIG_NAME).is_file():
            raise ConfigError(
                f"{folder} holds its own {component}/ and names another preset's in its "
                f"{PRESET_INFO_NAME} ({component}_from): remove one of them"
            )
        return shared
    if (sub / CONFIG_NAME).is_file():
        return sub
    raise ConfigError(
        f"{folder} has no {CONFIG_NAME} and no {component}/{CONFIG_NAME} "
        "(expected a folder written by save_pretrained or a preset folder)"
    )


def shared_component_source(folder: str | os.PathLike[str], component: str) -> Path | None:
    """The sibling preset's `<component>/` named by `preset.json`'s `"<component>_from"`, or None when the
    preset names none; a ConfigError when the named preset or its part is missing."""
    folder = Path(folder)
    info_path = folder / PRESET_INFO_NAME
    if not info_path.is_file():
        return None
    info = read_json(info_path)
    key = f"{component}_from"
    name = info.get(key) if isinstance(info, dict) else None
    if name is None:
        return None
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ConfigError(f"{info_path}: {key!r} must be the name of a sibling preset folder, got {name!r}")
    source = folder.parent / name / component
    if not (source / CONFIG_NAME).is_file():
        raise ConfigError(
            f"preset {folder.name!r} uses the {component} of preset {name!r} ({key!r} in {info_path}), "
            f"but {source} holds no {CONFIG_NAME}: put the {name!r} preset beside {folder.name!r}"
        )
    return source


def from_pretrained(
    dir_or_name: str | os.PathLike[str],
    *,
    component: str = "model",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    strict: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Load a module from a folder or a preset name.

    A folder is either one component (`config.json` + `model.safetensors`) or a preset folder whose
    `component` sub-folder ("model", "tokenizer") is loaded. A name is looked up with `get_preset`, its
    weights resolved (package, download, conversion from `checkpoint`); a "random" preset is built from
    its config with fresh weights.
    """
    path = Path(dir_or_name).expanduser()
    if path.exists() or isinstance(dir_or_name, os.PathLike) or os.sep in str(dir_or_name):
        if not path.is_dir():
            raise ConfigError(
                f"{path} is not a folder (expected a save_pretrained folder or a preset folder)"
            )
        return load_component(component_dir(path, component), device=device, dtype=dtype, strict=strict)
    preset = get_preset(str(dir_or_name))
    folder = resolve_preset_dir(preset, checkpoint=checkpoint)
    if folder is None:
        if component != "model":
            raise ConfigError(f"preset {preset.name!r} has random weights and no {component!r} part")
        module = build_from_config(
            {"family": preset.family, **preset.config}, source=f"preset {preset.name!r}"
        )
        return module.to(device=device, dtype=dtype).eval()
    return load_component(component_dir(folder, component), device=device, dtype=dtype, strict=strict)


def count_parameters(module: nn.Module) -> int:
    """Number of distinct parameter elements (tied weights counted once)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "build_from_config",
    "check_state_shapes",
    "component_dir",
    "count_parameters",
    "from_pretrained",
    "load_component",
    "load_weights_into",
    "module_state_for_saving",
    "read_config",
    "save_preset_folder",
    "save_pretrained",
    "shared_component_source",
]
