"""The official checkpoints genloom-image converts, and `load_official(name, path)` to read one offline.

Each entry names the official file (its local name under `$GENLOOM_HOME/checkpoints/`, distinct per entry),
its URL (as the official repositories publish it), the converter and the arguments the weights alone do not
fix (scale list, token grid, head counts). No sha256 is pinned: the files were not downloaded here, so
`load_official` takes a local path and never touches the network. `convert_official_preset` is the zoo's
converter hook: `genloom.core.zoo.from_pretrained("var-d16", checkpoint=path)` converts through it once
and caches the result as a zoo folder (float32, as the official weights are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from genloom.core.errors import UnknownPresetError
from genloom.core.zoo.preset import Preset
from genloom.core.zoo.registry import import_object

_VAR_HF = "https://huggingface.co/FoundationVision/var/resolve/main"
_LLAMAGEN_HF = "https://huggingface.co/FoundationVision/LlamaGen/resolve/main"


@dataclass(frozen=True)
class OfficialCheckpoint:
    name: str
    family: str
    filename: str
    url: str
    converter: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _entries() -> list[OfficialCheckpoint]:
    out = [
        OfficialCheckpoint(
            "var-vqvae",
            "image.tokenizer.multiscale_vq",
            "vae_ch160v4096z32.pth",
            f"{_VAR_HF}/vae_ch160v4096z32.pth",
            "genloom.image.convert:load_var_vqvae",
            description="VAR's multi-scale VQVAE (256px, 10 scales)",
        ),  # fmt: skip
        OfficialCheckpoint(
            "llamagen-vq16",
            "image.tokenizer.vq",
            "vq_ds16_c2i.pt",
            f"{_LLAMAGEN_HF}/vq_ds16_c2i.pt",
            "genloom.image.convert:load_llamagen_vq",
            description="LlamaGen VQ-16 tokenizer (16384 codes, dim 8)",
        ),  # fmt: skip
        OfficialCheckpoint(
            "mar-kl16",
            "image.tokenizer.kl",
            "kl16.ckpt",
            "https://www.dropbox.com/scl/fi/hhmuvaiacrarfg28qxhwz/kl16.ckpt?rlkey=l44xipsezc8atcffdp4q7mwmh&dl=1",
            "genloom.image.convert:load_mar_kl",
            description="MAR's KL-16 autoencoder (16 latent channels)",
        ),  # fmt: skip
    ]
    for depth in (16, 20, 24, 30):
        out.append(OfficialCheckpoint(f"var-d{depth}", "image.var", f"var_d{depth}.pth", f"{_VAR_HF}/var_d{depth}.pth",
                                      "genloom.image.convert:load_var", description=f"VAR d{depth}, ImageNet 256px"))  # fmt: skip
    for size, image, grid in (
        ("B", 256, 16),
        ("L", 256, 16),
        ("XL", 384, 24),
        ("XXL", 384, 24),
        ("3B", 384, 24),
    ):
        out.append(OfficialCheckpoint(f"llamagen-{size.lower()}", "image.raster_ar", f"c2i_{size}_{image}.pt",
                                      f"{_LLAMAGEN_HF}/c2i_{size}_{image}.pt", "genloom.image.convert:load_llamagen_gpt",
                                      {"grid": [grid, grid]}, f"LlamaGen-{size} class-to-image, {image}px"))  # fmt: skip
    for size, url in (
        (
            "b",
            "https://www.dropbox.com/scl/fi/f6dpuyjb7fudzxcyhvrhk/checkpoint-last.pth?rlkey=a6i4bo71vhfo4anp33n9ukujb&dl=1",
        ),
        (
            "l",
            "https://www.dropbox.com/scl/fi/pxacc5b2mrt3ifw4cah6k/checkpoint-last.pth?rlkey=m48ovo6g7ivcbosrbdaz0ehqt&dl=1",
        ),
        (
            "h",
            "https://www.dropbox.com/scl/fi/1qmfx6fpy3k7j9vcjjs3s/checkpoint-last.pth?rlkey=4lae281yzxb406atp32vzc83o&dl=1",
        ),
    ):
        # every MAR size publishes "checkpoint-last.pth": a folder per size keeps the local copies apart
        out.append(OfficialCheckpoint(f"mar-{size}", "image.mar", f"mar-{size}/checkpoint-last.pth", url, "genloom.image.convert:load_mar",
                                      {"prefer_ema": True}, f"MAR-{size.upper()} (EMA weights), ImageNet 256px"))  # fmt: skip
    return out


OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {entry.name: entry for entry in _entries()}


def load_official(name: str, path: str | Path, **overrides: Any) -> nn.Module:
    """Convert the official checkpoint `name` (see OFFICIAL_CHECKPOINTS) from a local file, safely."""
    entry = OFFICIAL_CHECKPOINTS.get(name)
    if entry is None:
        raise UnknownPresetError(name, OFFICIAL_CHECKPOINTS, what="official image checkpoint")
    kwargs = {**entry.kwargs, **overrides}
    if "grid" in kwargs:  # JSON configs carry lists
        kwargs["grid"] = tuple(kwargs["grid"])
    return import_object(entry.converter)(path, **kwargs)


def convert_official_preset(checkpoint: str | Path, folder: str | Path, *, preset: Preset) -> None:
    """Zoo converter: official file -> zoo folder (`config.json` + float32 `model.safetensors`).

    `preset.name` picks the official entry; `preset.config` holds its converter arguments.
    """
    module = load_official(preset.name, checkpoint, **preset.config)
    module.save_pretrained(folder, dtype=None)  # type: ignore[operator]
