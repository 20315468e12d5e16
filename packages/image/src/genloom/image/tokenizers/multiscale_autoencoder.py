"""VAR's multi-scale residual VQ autoencoder: conv encoder, 3x3 quant convs, core's MultiScaleResidualVQ.

An image is coded as token maps of growing size (patch_nums, smallest first) from one shared codebook;
tokens are the scale-major sequence (B, L). The decoder turns the accumulated feature f_hat into an image
clamped to [-1, 1], as VAR's `fhat_to_img` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from genloom.core.tokenizers.multiscale_vq import DEFAULT_PATCH_NUMS, MultiScaleResidualVQ
from genloom.image.errors import ImageInputError
from genloom.image.io import ZooComponent, register_image_family
from genloom.image.tokenizers.conv_net import (
    ConvDecoder,
    ConvEncoder,
    ConvNetConfig,
    nested_config_from_dict,
    nested_config_to_dict,
)
from genloom.image.tokenizers.vq_autoencoder import AutoencoderOutput, check_images

MULTISCALE_FAMILY = "image.tokenizer.multiscale_vq"


@dataclass
class MultiScaleVQAutoencoderConfig:
    """VAR VQVAE defaults: ch 160 in the release (128 in the constructor), Cvae 32, V 4096, 10 scales to 16x16."""

    net: ConvNetConfig = field(
        default_factory=lambda: ConvNetConfig(ch=160, ch_mult=(1, 1, 2, 2, 4), attn_levels=[4], z_channels=32)
    )
    codebook_size: int = 4096
    patch_nums: Sequence[int] = DEFAULT_PATCH_NUMS
    quant_conv_kernel: int = 3
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    beta: float = 0.25
    l2_normalize: bool = False
    dead_code_after: int | None = None  # restart codes idle this many training steps (None: off, as VAR)

    def to_dict(self) -> dict[str, Any]:
        data = nested_config_to_dict(self)
        data["patch_nums"] = list(self.patch_nums)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MultiScaleVQAutoencoderConfig:
        return nested_config_from_dict(cls, data)


class MultiScaleVQAutoencoder(ZooComponent, nn.Module):
    """encode: image -> (B, L) scale-major ids; decode: ids -> image in [-1, 1]."""

    family = MULTISCALE_FAMILY
    config_class = MultiScaleVQAutoencoderConfig

    def __init__(self, config: MultiScaleVQAutoencoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MultiScaleVQAutoencoderConfig()
        c = cfg.net.z_channels
        self.encoder = ConvEncoder(cfg.net)
        self.decoder = ConvDecoder(cfg.net)
        pad = cfg.quant_conv_kernel // 2
        self.quant_conv = nn.Conv2d(c, c, cfg.quant_conv_kernel, padding=pad)
        self.post_quant_conv = nn.Conv2d(c, c, cfg.quant_conv_kernel, padding=pad)
        self.quantize = MultiScaleResidualVQ(
            dim=c,
            codebook_size=cfg.codebook_size,
            patch_nums=list(cfg.patch_nums),
            beta=cfg.beta,
            quant_resi=cfg.quant_resi,
            share_quant_resi=cfg.share_quant_resi,
            l2_normalize=cfg.l2_normalize,
            dead_code_after=cfg.dead_code_after,
        )

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    @property
    def image_size(self) -> int:
        return self.config.patch_nums[-1] * self.config.net.downsample_factor

    def encode_features(self, images: torch.Tensor) -> torch.Tensor:
        """Feature map before quantisation, (B, Cvae, pn_last, pn_last)."""
        check_images(
            images, channels=self.config.net.in_channels, multiple_of=1, name="MultiScaleVQAutoencoder"
        )
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ImageInputError(
                f"MultiScaleVQAutoencoder expects {self.image_size}x{self.image_size} images, got {tuple(images.shape[-2:])}"
            )
        return self.quant_conv(self.encoder(images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Scale-major token ids (B, L)."""
        indices, _ = self.quantize.quantize_scales(self.encode_features(images))
        return torch.cat(indices, dim=1)

    def fhat_to_image(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] from the accumulated feature f_hat (B, Cvae, h, w)."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1.0, 1.0)

    def decode(self, indices: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Image in [-1, 1] from all scales' ids ((B, L) or VAR's list of (B, pn*pn))."""
        return self.fhat_to_image(self.quantize.indices_to_codes(indices))

    def decode_per_scale(self, indices: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Images decoded after using scales 0..k, for every k (coarse-to-fine previews)."""
        return [self.fhat_to_image(f) for f in self.quantize.indices_to_codes(indices, per_scale=True)]

    def forward(self, images: torch.Tensor) -> AutoencoderOutput:
        quantized = self.quantize(self.encode_features(images))
        return AutoencoderOutput(self.decoder(self.post_quant_conv(quantized.codes)), quantized)


register_image_family(MultiScaleVQAutoencoder)
