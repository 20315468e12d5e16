"""A class-conditional image generator = tokenizer + token model, saved as one preset folder.

Families: "ar" (VQ tokenizer + RasterAR), "maskgit" (VQ + MaskGIT), "var" (multi-scale VQ + NextScaleAR),
"mar" (KL autoencoder + MaskedAutoregressive). Folder layout (DESIGN.md): `preset.json`,
`tokenizer/{config.json, model.safetensors}`, `model/{config.json, model.safetensors}`; a preset trained on
another preset's tokenizer may instead name it in `preset.json` (`"tokenizer_from": "ar-digits"`, a sibling
folder), so the shared file is stored once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from genloom.core.errors import ConfigError
from genloom.core.sampling.logits import SamplingParams
from genloom.core.zoo.pretrained import component_dir
from genloom.image.errors import CheckpointError, UnknownClassError
from genloom.image.fast_decode import FastDecode
from genloom.image.io import read_family, write_json
from genloom.image.models.masked_autoregressive import MaskedAutoregressive
from genloom.image.models.masked_tokens import MaskGIT
from genloom.image.models.next_scale import NextScaleAR
from genloom.image.models.raster_ar import RasterAR
from genloom.image.recipes import sampling_params
from genloom.image.tokenizers import KLAutoencoder, MultiScaleVQAutoencoder, VQAutoencoder

DEFAULT_CFG_SCALE = 2.0  # for a preset.json that names no cfg_scale

TOKENIZERS = {cls.family: cls for cls in (VQAutoencoder, MultiScaleVQAutoencoder, KLAutoencoder)}
GENERATORS: dict[str, type[nn.Module]] = {
    "ar": RasterAR,
    "maskgit": MaskGIT,
    "var": NextScaleAR,
    "mar": MaskedAutoregressive,
}
TOKENIZER_OF = {
    "ar": VQAutoencoder,
    "maskgit": VQAutoencoder,
    "var": MultiScaleVQAutoencoder,
    "mar": KLAutoencoder,
}
FAMILY_NAMES = {cls.family: name for name, cls in GENERATORS.items()}


def tokens_of(family: str, tokenizer: nn.Module, generator: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What a family's generator models: flat VQ ids (ar, maskgit), scale-major ids (var), latent patches (mar)."""
    with torch.no_grad():
        if family in ("ar", "maskgit"):
            return tokenizer.encode(images).flatten(1)
        if family == "var":
            return tokenizer.encode(images)
        return generator.patchify(tokenizer.encode_tokens(images))


def sampling_steps(family: str, generator: nn.Module, settings: dict[str, Any]) -> int:
    """Network evaluations per image (transformer forwards; MAR adds its diffusion-head steps per iteration)."""
    if family == "ar":
        return generator.num_tokens
    if family == "var":
        return len(generator.config.patch_nums)
    if family == "maskgit":
        return int(settings.get("steps", 8))
    return int(settings.get("num_iter", 16)) * (1 + generator.config.diffusion_steps)


class ImagePipeline:
    """Tokenizer + generator + the class names of the data they were trained on + default sampling settings."""

    def __init__(
        self,
        tokenizer: nn.Module,
        generator: nn.Module,
        *,
        class_names: list[str],
        info: dict[str, Any] | None = None,
    ) -> None:
        if generator.family not in FAMILY_NAMES:
            raise CheckpointError(
                f"{type(generator).__name__} is not a generator family {sorted(GENERATORS)}"
            )
        family = FAMILY_NAMES[generator.family]
        if not isinstance(tokenizer, TOKENIZER_OF[family]):
            raise CheckpointError(
                f"a {family} generator needs a {TOKENIZER_OF[family].__name__} tokenizer, got {type(tokenizer).__name__}"
            )
        self.tokenizer = tokenizer.eval()
        self.generator = generator.eval()
        self.class_names = class_names
        self.info = info or {}
        self._fast_decode = FastDecode.for_tokenizer(self.tokenizer)  # compiles on its first CUDA call

    @property
    def family(self) -> str:
        return FAMILY_NAMES[self.generator.family]

    @property
    def sampling_steps(self) -> int:
        return sampling_steps(self.family, self.generator, self.info)

    def class_index(self, label: int | str) -> int:
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in self.class_names:
                raise UnknownClassError(f"unknown class {label!r}; expected one of {self.class_names}")
            return self.class_names.index(label)
        index = int(label)
        if not 0 <= index < len(self.class_names):
            raise UnknownClassError(f"class {index} is out of range: expected 0..{len(self.class_names) - 1}")
        return index

    @property
    def default_cfg_scale(self) -> float:
        """The preset's guidance scale (preset.json `cfg_scale`, chosen when it was trained; else 2.0)."""
        return float(self.info.get("cfg_scale", DEFAULT_CFG_SCALE))

    def default_sampling(self, **overrides: Any) -> SamplingParams:
        """The preset's sampling (preset.json `temperature` / `top_k` / `top_p`, as `recipes.sampling_params`
        reads them), with `overrides` of those fields (None keeps the preset's)."""
        settings = {**self.info, **{key: value for key, value in overrides.items() if value is not None}}
        return sampling_params(settings)

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor,
        *,
        cfg_scale: float | None = None,
        sampling: SamplingParams | None = None,
        seed: int | None = None,
        fast: bool = False,
    ) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] for the class ids `labels` (B,). `fast` takes the GPU fast path
        where the family has one (ar: the compiled decode step; var, maskgit: CUDA graphs of their passes): same
        tokens; their images are decoded by the compiled bf16 decoder (`FastDecode`). `cfg_scale` and `sampling`
        default to the preset's (`default_cfg_scale`, `default_sampling()`)."""
        cfg_scale = self.default_cfg_scale if cfg_scale is None else cfg_scale
        sampling = self.default_sampling() if sampling is None else sampling
        if cfg_scale < 0:
            raise ValueError(f"the CFG scale must be >= 0 (1 = no guidance), got {cfg_scale}")
        for label in labels.tolist():
            self.class_index(label)
        device = next(self.generator.parameters()).device
        labels = labels.to(device)
        generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        family, gen, tok = self.family, self.generator, self.tokenizer
        decode = self._fast_decode if fast else tok.decode
        if family == "ar":
            tokens = gen.generate(
                labels, cfg_scale=cfg_scale, sampling=sampling, generator=generator, compiled=fast
            )
            images = decode(tokens.view(-1, *gen.config.grid))
        elif family == "maskgit":
            tokens = gen.generate(
                labels, steps=int(self.info.get("steps", 8)), cfg_scale=cfg_scale, sampling=sampling, generator=generator,
                choice_temperature=float(self.info.get("choice_temperature", 4.5)), graphed=fast,
            )  # fmt: skip
            images = decode(tokens.view(-1, *gen.config.grid))
        elif family == "var":
            ids, f_hat = gen.generate(
                labels, tok.quantize, cfg_scale=cfg_scale, sampling=sampling, generator=generator, graphed=fast,
                return_fhat=True,
            )  # fmt: skip
            # the fast path decodes the loop's own f_hat (VAR's sampler does); the plain path decodes the ids
            images = self._fast_decode(f_hat, prepared=True) if fast else tok.decode(ids)
        else:
            temperature = sampling.temperature if sampling is not None else 1.0
            tokens = gen.generate(
                labels,
                num_iter=int(self.info.get("num_iter", 16)),
                cfg_scale=cfg_scale,
                cfg_schedule=str(self.info.get("cfg_schedule", "linear")),
                temperature=temperature,
                clip_x0=self.info.get("clip_x0"),
                generator=generator,
            )
            images = tok.decode_tokens(gen.unpatchify(tokens))
        return images.clamp(-1, 1)

    def to(self, device: str | torch.device) -> ImagePipeline:
        self.tokenizer.to(device)
        self.generator.to(device)
        return self

    def save(self, folder: str | Path, *, tokenizer_from: str | None = None) -> None:
        """Write the preset folder. With `tokenizer_from` (the name of a sibling preset folder that already
        holds, or will hold once the presets are copied together, this very tokenizer) no `tokenizer/` is
        written: `preset.json` names that preset instead, and loading reads its tokenizer (one file stored once
        for presets trained on one tokenizer)."""
        folder = Path(folder)
        info = {k: v for k, v in self.info.items() if k != "tokenizer_from"}
        if tokenizer_from is None:
            self.tokenizer.save_pretrained(folder / "tokenizer")
        else:
            if not tokenizer_from or any(c in tokenizer_from for c in "/\\") or tokenizer_from in (".", ".."):
                raise ValueError(f"tokenizer_from must name a sibling preset folder, got {tokenizer_from!r}")
            source = folder.parent / tokenizer_from / "tokenizer"
            # checked when the sibling is there already; else loading checks it (with a clear error if missing)
            if (source / "config.json").is_file() and read_family(source) != self.tokenizer.family:
                raise CheckpointError(
                    f"{source} holds a {read_family(source)!r} tokenizer, not this preset's {self.tokenizer.family!r}"
                )
            info["tokenizer_from"] = tokenizer_from
            if (folder / "tokenizer").exists():  # a tokenizer this folder held before: it no longer applies
                shutil.rmtree(folder / "tokenizer")
        self.generator.save_pretrained(folder / "model")
        write_json(folder / "preset.json", {**info, "family": self.family, "class_names": self.class_names})

    @classmethod
    def load(cls, folder: str | Path) -> ImagePipeline:
        folder = Path(folder)
        try:
            info = json.loads((folder / "preset.json").read_text())
            tok_folder = component_dir(folder, "tokenizer")  # its own tokenizer/ or its tokenizer_from's
            tok_family = read_family(tok_folder)
            gen_family = read_family(folder / "model")
        except (OSError, json.JSONDecodeError, CheckpointError, ConfigError) as err:
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
        tokenizer = TOKENIZERS[tok_family].from_pretrained(tok_folder)
        generator = GENERATORS[FAMILY_NAMES[gen_family]].from_pretrained(folder / "model")
        return cls(tokenizer, generator, class_names=info["class_names"], info=info)
