"""KL autoencoder with continuous latents (LDM / MAR's KL-16): the tokenizer of continuous-token models.

The encoder emits mean and log-variance of a diagonal Gaussian per latent pixel (core's `DiagonalGaussian`);
MAR multiplies the latent by a scale factor (0.2325 for its KL-16) so that tokens have roughly unit variance,
which core's `KLBottleneck` applies (`scale` / `unscale`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from genloom.core.tokenizers import MAR_KL16_SCALE, DiagonalGaussian, KLBottleneck
from genloom.image.errors import ImageInputError
from genloom.image.io import ZooComponent, register_image_family
from genloom.image.tokenizers.conv_net import (
    ConvDecoder,
    ConvEncoder,
    ConvNetConfig,
    nested_config_from_dict,
    nested_config_to_dict,
)
from genloom.image.tokenizers.vq_autoencoder import check_images

KL_FAMILY = "image.tokenizer.kl"


@dataclass
class KLAutoencoderConfig:
    """MAR KL-16 defaults: ch 128, ch_mult (1, 1, 2, 2, 4), no level attention, 16 latent channels."""

    net: ConvNetConfig = field(
        default_factory=lambda: ConvNetConfig(
            ch=128, ch_mult=(1, 1, 2, 2, 4), attn_levels=[], z_channels=16, double_z=True
        )
    )
    embed_dim: int = 16
    scale_factor: float = MAR_KL16_SCALE
    kl_weight: float = 1e-6

    def to_dict(self) -> dict[str, Any]:
        return nested_config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KLAutoencoderConfig:
        return nested_config_from_dict(cls, data)


@dataclass
class KLAutoencoderOutput:
    reconstruction: torch.Tensor
    posterior: DiagonalGaussian


class KLAutoencoder(ZooComponent, nn.Module):
    """encode: image -> DiagonalGaussian over (B, embed_dim, h, w); decode: latent -> image (not clamped)."""

    family = KL_FAMILY
    config_class = KLAutoencoderConfig

    def __init__(self, config: KLAutoencoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or KLAutoencoderConfig()
        if not cfg.net.double_z:
            raise ValueError("a KL autoencoder's encoder must emit mean and log-variance (net.double_z=True)")
        self.encoder = ConvEncoder(cfg.net)
        self.decoder = ConvDecoder(cfg.net)
        self.quant_conv = nn.Conv2d(2 * cfg.net.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.net.z_channels, 1)
        self.bottleneck = KLBottleneck(latent_dim=cfg.embed_dim, scale_factor=cfg.scale_factor, channel_dim=1)

    @property
    def latent_channels(self) -> int:
        return self.config.embed_dim

    def encode(self, images: torch.Tensor) -> DiagonalGaussian:
        check_images(
            images,
            channels=self.config.net.in_channels,
            multiple_of=self.config.net.downsample_factor,
            name="KLAutoencoder",
        )
        return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(images)), channel_dim=1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 4 or latents.shape[1] != self.config.embed_dim:
            raise ImageInputError(
                f"KLAutoencoder.decode expects latents (B, {self.config.embed_dim}, h, w), got {tuple(latents.shape)}"
            )
        return self.decoder(self.post_quant_conv(latents))

    @torch.no_grad()
    def encode_tokens(
        self, images: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scaled latents (what MAR models): posterior sample or mean, times `scale_factor`."""
        posterior = self.encode(images)
        latent = posterior.sample(generator) if sample else posterior.mode()
        return self.bottleneck.scale(latent)

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Image from scaled latents (inverse of `encode_tokens`), clamped to [-1, 1]."""
        return self.decode(self.bottleneck.unscale(tokens)).clamp(-1.0, 1.0)

    def set_scale_factor(self, scale_factor: float) -> None:
        """Change the latent scale (after calibration); keeps the config and the bottleneck in step."""
        if scale_factor == 0:
            raise ValueError("scale_factor must be non-zero")
        self.config.scale_factor = self.bottleneck.scale_factor = float(scale_factor)

    def forward(self, images: torch.Tensor, *, sample: bool = True) -> KLAutoencoderOutput:
        posterior = self.encode(images)
        latent = posterior.sample() if sample else posterior.mode()
        return KLAutoencoderOutput(self.decode(latent), posterior)


register_image_family(KLAutoencoder)
