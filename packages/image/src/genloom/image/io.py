"""Image models and tokenizers saved and loaded through core's zoo (`config.json` + `model.safetensors`).

Every image module is a zoo family: `ZooComponent` gives it `save_pretrained` / `from_pretrained` on top of
`genloom.core.zoo.save_pretrained` / `load_component`, and `register_image_family` registers its builder so
`genloom.core.zoo.from_pretrained(folder)` builds it too. The one thing image adds is storage precision:
floating weights are written as float16 (the shipped presets stay a few MB) and loaded back into float32
modules. A folder of another family gives a clear error instead of a shape mismatch deep inside torch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from genloom.core.errors import ConfigError
from genloom.core.io import atomic_write_json
from genloom.core.zoo import load_component, read_config, register_family, save_pretrained
from genloom.image.errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (core's temp-file-then-rename), creating the folder first."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)


def save_component(
    module: nn.Module,
    folder: str | Path,
    config: Mapping[str, Any],
    *,
    dtype: torch.dtype | None = torch.float16,
) -> Path:
    """`genloom.core.zoo.save_pretrained` with floating weights stored as `dtype` (None: as they are).

    The module itself is left untouched: a CPU copy is cast and saved.
    """
    stored = module if dtype is None else copy.deepcopy(module).to(device="cpu", dtype=dtype)
    return save_pretrained(stored, folder, config=config)


def read_family(folder: str | Path) -> str:
    """The `family` named by `folder/config.json`; CheckpointError if the folder is not a model folder."""
    try:
        return str(read_config(folder)["family"])
    except ConfigError as err:
        raise CheckpointError(f"{folder} is not a model folder: {err}") from None


def load_component_of(folder: str | Path, expected: type[ModuleT], *, family: str) -> ModuleT:
    """Load a zoo component folder in float32 and eval mode, checking it holds `family` (an `expected`)."""
    found = read_family(folder)
    if found != family:
        raise CheckpointError(f"{folder} holds a model of family {found!r}, expected family {family!r}")
    module = load_component(folder, dtype=torch.float32)
    if not isinstance(module, expected):  # a foreign builder registered under an image family name
        raise CheckpointError(
            f"{folder}: family {family!r} built a {type(module).__name__}, expected {expected.__name__}"
        )
    return module


class ZooComponent:
    """Mixin for image modules with a `config` dataclass (`to_dict` / `from_dict`): zoo save and load.

    Subclasses set `family` (the `config.json` family) and `config_class`, and call
    `register_image_family(cls)` after the class so loading a folder of that family builds them.
    """

    family: ClassVar[str]
    config_class: ClassVar[Any]
    config: Any

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """Build the module (fresh weights) from a `config.json` dict, family key included or not."""
        return cls(cls.config_class.from_dict({k: v for k, v in config.items() if k != "family"}))

    def save_pretrained(self, folder: str | Path, *, dtype: torch.dtype | None = torch.float16) -> Path:
        """Write `folder/config.json` and `folder/model.safetensors` (atomically, via the zoo); floating
        weights are stored as `dtype` (float16 keeps trained presets small; None keeps them as they are)."""
        assert isinstance(self, nn.Module)
        return save_component(self, folder, {"family": self.family, **self.config.to_dict()}, dtype=dtype)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Any:
        """Load a folder written by `save_pretrained` (float32, eval mode); checks the family."""
        return load_component_of(folder, cls, family=cls.family)  # type: ignore[arg-type]


def register_image_family(cls: type[ZooComponent]) -> type[ZooComponent]:
    """Register `cls.from_config` as the zoo builder of `cls.family`."""
    register_family(cls.family, cls.from_config)
    return cls
