"""A class-conditional image generator = tokenizer + token model, saved as one preset folder.

Folder layout (DESIGN.md): `preset.json`, `tokenizer/{config.json, model.safetensors}`,
`model/{config.json, model.safetensors}`. `ImagePipeline.sample` turns class ids into images in [-1, 1].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.image.errors import CheckpointError, UnknownClassError
from genloom.image.io import CONFIG_NAME, write_json
from genloom.image.models.raster_ar import RasterAR
from genloom.image.tokenizers import KLAutoencoder, MultiScaleVQAutoencoder, VQAutoencoder

TOKENIZERS = {cls.family: cls for cls in (VQAutoencoder, MultiScaleVQAutoencoder, KLAutoencoder)}
GENERATORS = {"ar": RasterAR}
FAMILY_NAMES = {RasterAR.family: "ar"}


class ImagePipeline:
    """Tokenizer + generator + the class names of the data they were trained on."""

    def __init__(
        self,
        tokenizer: VQAutoencoder,
        generator: RasterAR,
        *,
        class_names: list[str],
        info: dict[str, Any] | None = None,
    ) -> None:
        self.tokenizer = tokenizer.eval()
        self.generator = generator.eval()
        self.class_names = class_names
        self.info = info or {}

    @property
    def family(self) -> str:
        return FAMILY_NAMES[self.generator.family]

    def class_index(self, label: int | str) -> int:
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in self.class_names:
                raise UnknownClassError(f"unknown class {label!r}; expected one of {self.class_names}")
            return self.class_names.index(label)
        index = int(label)
        if not 0 <= index < len(self.class_names):
            raise UnknownClassError(f"class {index} is out of range: expected 0..{len(self.class_names) - 1}")
        return index

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor,
        *,
        cfg_scale: float = 1.0,
        sampling: SamplingParams | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] for the class ids `labels` (B,)."""
        if cfg_scale < 0:
            raise ValueError(f"the CFG scale must be >= 0 (1 = no guidance), got {cfg_scale}")
        for label in labels.tolist():
            self.class_index(label)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        tokens = self.generator.generate(labels, cfg_scale=cfg_scale, sampling=sampling, generator=generator)
        h, w = self.generator.config.grid
        return self.tokenizer.decode(tokens.view(-1, h, w)).clamp(-1, 1)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.tokenizer.save_pretrained(folder / "tokenizer")
        self.generator.save_pretrained(folder / "model")
        write_json(
            folder / "preset.json", {**self.info, "family": self.family, "class_names": self.class_names}
        )

    @classmethod
    def load(cls, folder: str | Path) -> ImagePipeline:
        folder = Path(folder)
        try:
            info = json.loads((folder / "preset.json").read_text())
            tok_family = json.loads((folder / "tokenizer" / CONFIG_NAME).read_text())["family"]
            gen_family = json.loads((folder / "model" / CONFIG_NAME).read_text())["family"]
        except (OSError, json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(
                f"{folder} is not an image generator preset (preset.json, tokenizer/, model/): {err}"
            ) from None
        if tok_family not in TOKENIZERS:
            raise CheckpointError(
                f"{folder}: tokenizer family {tok_family!r} is not one of {sorted(TOKENIZERS)}"
            )
        if gen_family not in FAMILY_NAMES:
            raise CheckpointError(
                f"{folder}: model family {gen_family!r} is not a generator family {sorted(FAMILY_NAMES)}"
            )
        tokenizer = TOKENIZERS[tok_family].from_pretrained(folder / "tokenizer")
        generator = GENERATORS[FAMILY_NAMES[gen_family]].from_pretrained(folder / "model")
        return cls(tokenizer, generator, class_names=info["class_names"], info=info)
