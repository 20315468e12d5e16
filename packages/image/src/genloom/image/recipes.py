"""Architectures of the small presets trained on the built-in 32x32 data sets (and on users' folders).

Each builder returns an untrained module sized to stay under 5 MB in fp16; `scripts/train_image_presets.py`
and `genloom image train` share them so that a preset trained by either has the same shape. Two sizes:
"base" (the digits presets of ar / var / maskgit) and "compact" (about half the bytes: the MAR and shapes
presets, so that the package's shipped presets stay small).
"""

from __future__ import annotations

import torch.nn as nn

from genloom.core.sampling.logits import SamplingParams
from genloom.image.models.masked_autoregressive import MARConfig, MaskedAutoregressive, vit_config
from genloom.image.models.masked_tokens import MaskGIT, MaskGITConfig, maskgit_transformer_config
from genloom.image.models.next_scale import NextScaleAR, NextScaleConfig, var_transformer_config
from genloom.image.models.raster_ar import RasterAR, RasterARConfig, llamagen_transformer_config
from genloom.image.tokenizers import (
    ConvNetConfig,
    KLAutoencoder,
    KLAutoencoderConfig,
    MultiScaleVQAutoencoder,
    MultiScaleVQAutoencoderConfig,
    VQAutoencoder,
    VQAutoencoderConfig,
)

FAMILIES = ("ar", "var", "maskgit", "mar")
SIZES = ("base", "compact")
TOKENIZER_WIDTH = {"base": 48, "compact": 32}
SMALL_PATCH_NUMS = (1, 2, 3, 4, 6, 8)  # VAR scales for an 8x8 token map (32x32 images, downsample 4)


def _net(channels: int, z_channels: int, *, double_z: bool = False, ch: int = 48) -> ConvNetConfig:
    """32x32 -> 8x8 (downsample 4): one ResNet block per level, attention at the 8x8 level and in the middle."""
    return ConvNetConfig(
        in_channels=channels, out_channels=channels, ch=ch, ch_mult=(1, 2, 2), num_res_blocks=1, attn_levels=[2],
        z_channels=z_channels, double_z=double_z,
    )  # fmt: skip


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"unknown recipe size {size!r}; expected one of {SIZES}")


def build_tokenizer(
    family: str, channels: int, *, codebook_size: int = 256, image_size: int = 32, size: str = "base"
) -> nn.Module:
    """The tokenizer a family needs: VQ (ar, maskgit), multi-scale VQ (var) or KL (mar)."""
    _check_size(size)
    ch = TOKENIZER_WIDTH[size]
    if family in ("ar", "maskgit"):
        return VQAutoencoder(
            VQAutoencoderConfig(
                net=_net(channels, 64, ch=ch),
                codebook_size=codebook_size,
                codebook_dim=8,
                dead_code_after=200,
            )
        )
    if family == "var":
        side = image_size // 4
        patch_nums = [p for p in SMALL_PATCH_NUMS if p < side] + [side]
        return MultiScaleVQAutoencoder(
            MultiScaleVQAutoencoderConfig(
                net=_net(channels, 16, ch=ch), codebook_size=codebook_size, patch_nums=patch_nums
            )
        )
    if family == "mar":
        return KLAutoencoder(
            KLAutoencoderConfig(
                net=_net(channels, 8, double_z=True, ch=ch), embed_dim=8, scale_factor=1.0, kl_weight=1e-4
            )
        )
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def build_generator(
    family: str,
    *,
    num_classes: int,
    tokenizer: nn.Module,
    image_size: int = 32,
    size: str = "base",
    mar_prediction: str = "v",
) -> nn.Module:
    """A family's token model sized for `tokenizer`'s vocabulary / latent and an 8x8 token grid. MAR's
    diffusion head predicts v by default (`mar_prediction="epsilon"`: MAR's own target, which a head this
    small and this briefly trained gets badly wrong at the noisiest steps)."""
    _check_size(size)
    compact = size == "compact"
    side = image_size // 4
    if family == "ar":
        tcfg = llamagen_transformer_config(
            dim=128 if compact else 192,
            n_layers=4 if compact else 5,
            n_heads=4 if compact else 6,
            vocab_size=tokenizer.vocab_size,
            grid=(side, side),
            mlp_multiple_of=64,
        )
        return RasterAR(
            RasterARConfig(transformer=tcfg.to_dict(), num_classes=num_classes, grid=(side, side))
        )
    if family == "maskgit":
        tcfg = maskgit_transformer_config(
            dim=128 if compact else 192,
            n_layers=4 if compact else 5,
            n_heads=4 if compact else 6,
            codebook_size=tokenizer.vocab_size,
            num_tokens=side * side,
        )
        return MaskGIT(MaskGITConfig(transformer=tcfg, num_classes=num_classes, grid=(side, side)))
    if family == "var":
        patch_nums = list(tokenizer.config.patch_nums)
        tcfg = var_transformer_config(
            dim=128 if compact else 160,
            depth=3 if compact else 4,
            n_heads=4,
            vocab_size=tokenizer.vocab_size,
            patch_nums=patch_nums,
        )
        return NextScaleAR(
            NextScaleConfig(
                transformer=tcfg.to_dict(),
                num_classes=num_classes,
                patch_nums=patch_nums,
                codebook_dim=tokenizer.config.net.z_channels,
            )
        )
    if family == "mar":
        channels = tokenizer.latent_channels
        depth, head_width = (2, 128) if compact else (3, 192)
        return MaskedAutoregressive(
            MARConfig(
                encoder=vit_config(dim=128, depth=depth, n_heads=4),
                decoder=vit_config(dim=128, depth=depth, n_heads=4),
                num_classes=num_classes,
                token_dim=channels,
                vae_channels=channels,
                patch_size=1,
                grid=(side, side),
                buffer_size=4,
                diffusion_width=head_width,
                diffusion_depth=3,
                diffusion_steps=50,
                diffusion_prediction=mar_prediction,
            )  # fmt: skip
        )
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


GENERATOR_LR = {"ar": 1e-3, "var": 1e-3, "maskgit": 1e-3, "mar": 5e-4}
"""AdamW peak learning rate of each family's generator (warmup, then cosine decay)."""

GENERATOR_GRAD_CLIP = {"ar": 1.0, "var": 1.0, "maskgit": 1.0, "mar": 3.0}
"""Max gradient norm of each family's generator (MAR's official recipe clips at 3.0)."""

MAR_SAMPLING_CANDIDATES = [
    {"cfg_scale": cfg, "cfg_schedule": schedule, "clip_x0": clip}
    for cfg in (2.0, 3.0, 4.0)
    for schedule in ("linear", "constant")
    for clip in (3.0, None)
]
"""MAR sampling settings the preset script chooses from on samples of its own seed (not the table's): the
guidance and clipping that suit a briefly trained head differ from run to run (an epsilon head needs the
clipping, a v head does not, and 3.0 clips real values of the shapes latents)."""

DEFAULT_SAMPLING = {
    "ar": {"cfg_scale": 2.0, "top_k": 64},
    "var": {"cfg_scale": 2.0, "top_k": 64},
    "maskgit": {"cfg_scale": 2.0, "steps": 8, "choice_temperature": 4.5},
    "mar": {"cfg_scale": 2.0, "cfg_schedule": "linear", "num_iter": 16, "clip_x0": 3.0},
}
"""Sampling settings stored in a new preset's `preset.json` (its defaults for the CLI, demo and scoring)."""


def sampling_params(settings: dict) -> SamplingParams:
    """The token sampling of a preset's settings (`temperature`, `top_k`, `top_p`; absent: off / 1.0)."""
    return SamplingParams(
        temperature=float(settings.get("temperature", 1.0)),
        top_k=settings.get("top_k"),
        top_p=settings.get("top_p"),
    )
