"""Save and load genloom transformers through the zoo's one folder format.

A folder is `config.json` (`{"family": "core.transformer" | "core.encoder" | "core.encoder_decoder",
"config": {...}}`) + `model.safetensors`; the architecture always comes from the config, never from a path.
The families are registered with `genloom.core.zoo` so `from_pretrained(folder)` builds these models too;
shape checks, tied weights and atomic writes are the zoo's (`save_pretrained` / `load_component`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from genloom.core.errors import CheckpointError
from genloom.core.zoo import register_family
from genloom.core.zoo.pretrained import load_component, save_pretrained

from .config import TransformerConfig
from .encoder_decoder import Encoder, EncoderDecoder
from .transformer import Transformer

__all__ = ["FAMILIES", "build_model", "load_model", "model_config", "save_model"]


def _build_transformer(config: dict[str, Any]) -> Transformer:
    return Transformer(TransformerConfig.from_dict(config["config"]))


def _build_encoder(config: dict[str, Any]) -> Encoder:
    return Encoder(TransformerConfig.from_dict(config["config"]))


def _build_encoder_decoder(config: dict[str, Any]) -> EncoderDecoder:
    return EncoderDecoder.from_dict(config["config"])


FAMILIES = {
    "core.transformer": _build_transformer,
    "core.encoder": _build_encoder,
    "core.encoder_decoder": _build_encoder_decoder,
}
for _name, _builder in FAMILIES.items():
    register_family(_name, _builder)


def model_config(model: nn.Module) -> dict[str, Any]:
    """The `config.json` content describing `model` (family + architecture)."""
    if isinstance(model, EncoderDecoder):
        return {"family": "core.encoder_decoder", "config": model.to_dict()}
    if isinstance(model, Encoder):
        return {"family": "core.encoder", "config": model.config.to_dict()}
    if isinstance(model, Transformer):
        return {"family": "core.transformer", "config": model.config.to_dict()}
    raise CheckpointError(
        f"save_model saves Transformer, Encoder or EncoderDecoder, got {type(model).__name__}"
    )


def build_model(config: dict[str, Any]) -> nn.Module:
    """Instantiate (random weights) the model a `config.json` dict describes."""
    family = config.get("family") if isinstance(config, dict) else None
    if family not in FAMILIES or "config" not in config:
        raise CheckpointError(f"config must be {{'family': one of {sorted(FAMILIES)}, 'config': {{...}}}}")
    return FAMILIES[family](config)


def save_model(model: nn.Module, folder: str | Path) -> Path:
    """Write `config.json` and `model.safetensors` (atomically) into `folder` (created if missing)."""
    return save_pretrained(model, folder, config=model_config(model))


def load_model(
    folder: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> nn.Module:
    """Load a folder written by `save_model`; the model is returned in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} does not exist (expected a folder written by save_model)")
    return load_component(folder, device=device, dtype=dtype)
