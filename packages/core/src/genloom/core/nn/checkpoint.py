"""Save and load genloom transformers as a folder: `config.json` (architecture) + `model.safetensors` (weights).

`config.json` is `{"class": "Transformer" | "Encoder" | "EncoderDecoder", "config": {...}}`; the architecture
always comes from it, never from a path. Loading builds the model on the meta device and assigns the
checked weights (no double allocation); a missing, unexpected or mis-shaped tensor is a `CheckpointError`
that names it. Tied output embeddings are stored once (`output.weight` is omitted and re-tied on load).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genloom.core.errors import CheckpointError
from genloom.core.io import atomic_save_safetensors, atomic_write_json, load_safetensors, read_json

from .config import TransformerConfig
from .encoder_decoder import Encoder, EncoderDecoder
from .transformer import Transformer

__all__ = ["save_model", "load_model", "build_model"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_CLASSES = {"Transformer": Transformer, "Encoder": Encoder, "EncoderDecoder": EncoderDecoder}


def _describe(model: nn.Module) -> dict:
    if isinstance(model, EncoderDecoder):
        return {"class": "EncoderDecoder", "config": model.to_dict()}
    if isinstance(model, Transformer):  # Encoder is a Transformer subclass
        return {"class": type(model).__name__, "config": model.config.to_dict()}
    raise CheckpointError(
        f"save_model saves Transformer, Encoder or EncoderDecoder, got {type(model).__name__}"
    )


def _tied_keys(model: nn.Module) -> set[str]:
    """`output.weight` keys that alias a token embedding (stored once)."""
    tied = set()
    for prefix, module in model.named_modules():
        if isinstance(module, Transformer) and module.config.tie_embeddings and module.output is not None:
            tied.add(f"{prefix}.output.weight" if prefix else "output.weight")
    return tied


def _retie(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, Transformer) and module.config.tie_embeddings and module.output is not None:
            module.output.weight = module.tok_embeddings.weight


def save_model(model: nn.Module, folder: str | Path) -> Path:
    """Write `config.json` and `model.safetensors` (atomically) into `folder` (created if missing)."""
    folder = Path(folder)
    description = _describe(model)
    folder.mkdir(parents=True, exist_ok=True)
    tied = _tied_keys(model)
    weights = {k: v for k, v in model.state_dict().items() if k not in tied}
    atomic_save_safetensors(weights, folder / WEIGHTS_NAME)
    atomic_write_json(folder / CONFIG_NAME, description)
    return folder


def build_model(description: dict) -> nn.Module:
    """Instantiate the model a `config.json` dict describes (random weights)."""
    if (
        not isinstance(description, dict)
        or description.get("class") not in _CLASSES
        or "config" not in description
    ):
        raise CheckpointError(
            f"config.json must be {{'class': one of {sorted(_CLASSES)}, 'config': {{...}}}}, got keys "
            f"{sorted(description) if isinstance(description, dict) else type(description).__name__}"
        )
    cls = _CLASSES[description["class"]]
    if cls is EncoderDecoder:
        return EncoderDecoder.from_dict(description["config"])
    return cls(TransformerConfig.from_dict(description["config"]))


def load_model(
    folder: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> nn.Module:
    """Load a folder written by `save_model`; the model is returned in eval mode."""
    folder = Path(folder)
    description = read_json(folder / CONFIG_NAME, what="model config")
    with torch.device("meta"):
        model = build_model(description)
    weights = load_safetensors(folder / WEIGHTS_NAME, device=device)
    expected = {k: v for k, v in model.state_dict().items() if k not in _tied_keys(model)}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{folder / WEIGHTS_NAME} does not fit its config: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for name, tensor in weights.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{name} in {folder / WEIGHTS_NAME} has shape {tuple(tensor.shape)}, the config needs "
                f"{tuple(expected[name].shape)}"
            )
    if dtype is not None:
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    model.load_state_dict(weights, strict=False, assign=True)
    _retie(model)
    return model.to(device).eval()
