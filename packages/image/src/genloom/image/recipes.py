"""Architectures of the small presets trained on the built-in 32x32 data sets (and on users' folders).

Each builder returns an untrained module sized to stay under 5 MB in fp16; `scripts/train_image_presets.py`
and `genloom image train` share them so that a preset trained by either has the same shape.
"""

from __future__ import annotations

import torch.nn as nn

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
SMALL_PATCH_NUMS = (1, 2, 3, 4, 6, 8)  # VAR scales for an 8x8 token map (32x32 images, downsample 4)


def _net(channels: int, z_channels: int, *, double_z: bool = False, ch: int = 48) -> ConvNetConfig:
    """32x32 -> 8x8 (downsample 4): one ResNet block per level, attention at the 8x8 level and in the middle."""
    return ConvNetConfig(
        in_channels=channels, out_channels=channels, ch=ch, ch_mult=(1, 2, 2), num_res_blocks=1, attn_levels=[2],
        z_channels=z_channels, double_z=double_z,
    )  # fmt: skip


def build_tokenizer(
    family: str, channels: int, *, codebook_size: int = 256, image_size: int = 32
) -> nn.Module:
    """The tokenizer a family needs: VQ (ar, maskgit), multi-scale VQ (var) or KL (mar)."""
    if family in ("ar", "maskgit"):
        return VQAutoencoder(
            VQAutoencoderConfig(
                net=_net(channels, 64), codebook_size=codebook_size, codebook_dim=8, dead_code_after=200
            )
        )
    if family == "var":
        side = image_size // 4
        patch_nums = [p for p in SMALL_PATCH_NUMS if p < side] + [side]
        return MultiScaleVQAutoencoder(
            MultiScaleVQAutoencoderConfig(
                net=_net(channels, 16), codebook_size=codebook_size, patch_nums=patch_nums
            )
        )
    if family == "mar":
        return KLAutoencoder(
            KLAutoencoderConfig(
                net=_net(channels, 8, double_z=True), embed_dim=8, scale_factor=1.0, kl_weight=1e-4
            )
        )
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def build_generator(
    family: str, *, num_classes: int, tokenizer: nn.Module, image_size: int = 32
) -> nn.Module:
    """A family's token model sized for `tokenizer`'s vocabulary / latent and an 8x8 token grid."""
    side = image_size // 4
    if family == "ar":
        tcfg = llamagen_transformer_config(
            dim=192,
            n_layers=5,
            n_heads=6,
            vocab_size=tokenizer.vocab_size,
            grid=(side, side),
            mlp_multiple_of=64,
        )
        return RasterAR(
            RasterARConfig(transformer=tcfg.to_dict(), num_classes=num_classes, grid=(side, side))
        )
    if family == "maskgit":
        tcfg = maskgit_transformer_config(
            dim=192, n_layers=5, n_heads=6, codebook_size=tokenizer.vocab_size, num_tokens=side * side
        )
        return MaskGIT(MaskGITConfig(transformer=tcfg, num_classes=num_classes, grid=(side, side)))
    if family == "var":
        patch_nums = list(tokenizer.config.patch_nums)
        tcfg = var_transformer_config(
            dim=160, depth=4, n_heads=4, vocab_size=tokenizer.vocab_size, patch_nums=patch_nums
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
        return MaskedAutoregressive(
            MARConfig(
                encoder=vit_config(dim=128, depth=3, n_heads=4),
                decoder=vit_config(dim=128, depth=3, n_heads=4),
                num_classes=num_classes,
                token_dim=channels,
                vae_channels=channels,
                patch_size=1,
                grid=(side, side),
                buffer_size=4,
                diffusion_width=192,
                diffusion_depth=3,
                diffusion_steps=50,
            )  # fmt: skip
        )
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


DEFAULT_SAMPLING = {
    "ar": {"cfg_scale": 2.0, "top_k": 64},
    "var": {"cfg_scale": 2.0, "top_k": 64},
    "maskgit": {"cfg_scale": 2.0, "steps": 8, "choice_temperature": 4.5},
    "mar": {"cfg_scale": 2.0, "num_iter": 16},
}
