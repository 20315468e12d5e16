"""Registries of the zoo: named presets and model families, filled by the installed genloom packages.

Presets come from the entry-point group `genloom.zoo` (each package's `zoo.py` exposes `PRESETS`) plus
any registered at run time with `register_preset`. A family ("image.var", "text.gpt") maps the `family`
field of a `config.json` to a builder `config dict -> nn.Module`; families are registered by modality
packages when their zoo module is imported, so an unknown family triggers a lazy import of every
`genloom.zoo` entry point before it is reported as unknown.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from torch import nn

from genloom.core.errors import ConfigError, UnknownPresetError
from genloom.core.zoo.preset import Preset

ZOO_GROUP = "genloom.zoo"

FamilyBuilder = Callable[[dict[str, Any]], nn.Module]

_FAMILIES: dict[str, FamilyBuilder] = {}
_RUNTIME_PRESETS: dict[str, Preset] = {}
_ENTRY_POINT_PRESETS: dict[str, Preset] | None = None
_ENTRY_POINT_PACKAGES: dict[str, str] = {}  # preset name -> entry point name it came from


def import_object(spec: str) -> Any:
    """Import "package.module:attribute" (dots allowed in the attribute) and return the object.

    Only call this on strings that come from installed code (presets), never from a config file.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"expected 'module:function', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} named in {spec!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"module {module_name!r} has no attribute {attribute!r} (from {spec!r})"
            ) from None
    return obj


def _zoo_entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=ZOO_GROUP), key=lambda ep: ep.name)


def _load_entry_point_presets() -> dict[str, Preset]:
    """Import every `genloom.zoo` entry point once; a broken plugin is warned about and skipped."""
    global _ENTRY_POINT_PRESETS
    if _ENTRY_POINT_PRESETS is not None:
        return _ENTRY_POINT_PRESETS
    found: dict[str, Preset] = {}
    for ep in _zoo_entry_points():
        try:
            presets = ep.load()
            presets = list(presets)
            bad = [p for p in presets if not isinstance(p, Preset)]
            if bad:
                raise TypeError(f"PRESETS must hold Preset objects, got {type(bad[0]).__name__}")
        except Exception as exc:  # a broken plugin must not break the zoo
            warnings.warn(
                f"genloom: skipping the presets of {ep.name!r} ({ep.value}): {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        for preset in presets:
            if preset.name in found:
                warnings.warn(
                    f"genloom: preset {preset.name!r} of {ep.name!r} duplicates one of "
                    f"{_ENTRY_POINT_PACKAGES[preset.name]!r}; keeping the first",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            found[preset.name] = preset
            _ENTRY_POINT_PACKAGES[preset.name] = ep.name
    _ENTRY_POINT_PRESETS = found
    return found


def refresh() -> None:
    """Forget the cached entry-point presets (after installing a package in a running process)."""
    global _ENTRY_POINT_PRESETS
    _ENTRY_POINT_PRESETS = None
    _ENTRY_POINT_PACKAGES.clear()


def _all_presets() -> dict[str, Preset]:
    presets = dict(_load_entry_point_presets())
    presets.update(_RUNTIME_PRESETS)
    return presets


def register_preset(preset: Preset, *, overwrite: bool = False) -> Preset:
    """Add a preset at run time (scripts, tests, notebooks); entry points are the usual route."""
    if not isinstance(preset, Preset):
        raise TypeError(f"register_preset expects a Preset, got {type(preset).__name__}")
    if not overwrite and preset.name in _all_presets():
        raise ConfigError(f"a preset named {preset.name!r} is already registered")
    _RUNTIME_PRESETS[preset.name] = preset
    return preset


def unregister_preset(name: str) -> None:
    """Remove a preset added with `register_preset` (no error if it is absent)."""
    _RUNTIME_PRESETS.pop(name, None)


def list_presets(modality: str | None = None) -> list[Preset]:
    """Every preset of the installed packages (optionally of one modality), sorted by modality and name."""
    presets = _all_presets().values()
    if modality is not None:
        presets = [p for p in presets if p.modality == modality]
    return sorted(presets, key=lambda p: (p.modality, p.name))


def get_preset(name: str) -> Preset:
    """The preset called `name`; UnknownPresetError (with the closest names) if there is none."""
    presets = _all_presets()
    if name not in presets:
        raise UnknownPresetError(name, presets)
    return presets[name]


def preset_package(name: str) -> str | None:
    """The `genloom.zoo` entry point that registered preset `name` (None for run-time presets)."""
    _load_entry_point_presets()
    return _ENTRY_POINT_PACKAGES.get(name)


# ----------------------------------------------------------------------------------------------------------
# families
# ----------------------------------------------------------------------------------------------------------


def register_family(name: str, builder: FamilyBuilder, *, overwrite: bool = False) -> FamilyBuilder:
    """Register `builder(config) -> nn.Module` for configs whose "family" is `name`.

    Re-registering the same builder (a re-imported module) is allowed; a different builder under a taken
    name needs `overwrite=True`. Returns the builder so it can be used as a decorator helper.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a family name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise TypeError(f"the builder of family {name!r} must be callable")
    current = _FAMILIES.get(name)
    if current is not None and not overwrite and _qualified(current) != _qualified(builder):
        raise ValueError(f"family {name!r} is already registered to {_qualified(current)}")
    _FAMILIES[name] = builder
    return builder


def unregister_family(name: str) -> None:
    """Remove a family (no error if it is absent)."""
    _FAMILIES.pop(name, None)


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def list_families() -> list[str]:
    """Names of every family registered so far (after importing the installed packages' zoos)."""
    _load_entry_point_presets()
    return sorted(_FAMILIES)


def get_family(name: str) -> FamilyBuilder:
    """The builder of family `name`, importing the installed packages' zoos first if it is not known yet."""
    if name not in _FAMILIES:
        _load_entry_point_presets()
    if name not in _FAMILIES:
        raise UnknownPresetError(name, _FAMILIES, what="family")
    return _FAMILIES[name]


__all__ = [
    "FamilyBuilder",
    "get_family",
    "get_preset",
    "import_object",
    "list_families",
    "list_presets",
    "preset_package",
    "refresh",
    "register_family",
    "register_preset",
    "unregister_family",
    "unregister_preset",
]
