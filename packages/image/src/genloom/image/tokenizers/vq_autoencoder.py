"""VQ autoencoder in the LlamaGen / taming style: conv encoder, 1x1 projections, VQ codebook, conv decoder.

The codebook lookup is core's `VectorQuantizer` (optionally L2-normalised, as LlamaGen's VQ-16 with
`codebook_l2_norm=True`). Images are (B, C, H, W) in [-1, 1]; tokens are a (B, H/f, W/f) grid of ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from genloom.core.tokenizers.base import QuantizerOutput
from genloom.core.tokenizers.vq import VectorQuantizer
from genloom.image.errors import ImageInputError
from genloom.image.io import ZooComponent, register_image_family
from genloom.image.tokenizers.conv_net import (
    ConvDecoder,
    ConvEncoder,
    ConvNetConfig,
    nested_config_from_dict,
    nested_config_to_dict,
)

VQ_FAMILY = "image.tokenizer.vq"


@dataclass
class VQAutoencoderConfig:
    """Architecture of a VQ autoencoder; `net` describes encoder and decoder (LlamaGen: attn at the deepest level)."""

    net: ConvNetConfig = field(
        default_factory=lambda: ConvNetConfig(ch_mult=(1, 1, 2, 2, 4), attn_levels=[4])
    )
    codebook_size: int = 16384
    codebook_dim: int = 8
    l2_normalize: bool = True
    beta: float = 0.25
    dead_code_after: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return nested_config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VQAutoencoderConfig:
        return nested_config_from_dict(cls, data)


@dataclass
class AutoencoderOutput:
    """Reconstruction plus the quantizer's output (codes, ids, auxiliary loss, usage metrics)."""

    reconstruction: torch.Tensor
    quantized: QuantizerOutput


def check_images(images: torch.Tensor, *, channels: int, multiple_of: int, name: str) -> None:
    """Clear error unless images is (B, channels, H, W) floating with H, W multiples of the downsampling factor."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ImageInputError(f"{name} expects a float tensor (B, {channels}, H, W) in [-1, 1], got {got}")
    if images.shape[1] != channels:
        raise ImageInputError(
            f"{name} expects {channels} channels, got {images.shape[1]} (shape {tuple(images.shape)})"
        )
    if images.shape[2] % multiple_of or images.shape[3] % multiple_of:
        raise ImageInputError(
            f"{name} expects H and W divisible by {multiple_of}, got {images.shape[2]}x{images.shape[3]}"
        )


class VQAutoencoder(ZooComponent, nn.Module):
    """encode: image -> (B, h, w) token ids; decode: ids -> image; forward: reconstruction for training."""

    family = VQ_FAMILY
    config_class = VQAutoencoderConfig

    def __init__(self, config: VQAutoencoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or VQAutoencoderConfig()
        net = self.config.net
        self.encoder = ConvEncoder(net)
        self.decoder = ConvDecoder(net)
        self.quant_conv = nn.Conv2d(net.z_channels, self.config.codebook_dim, 1)
        self.quantize = VectorQuantizer(
            dim=self.config.codebook_dim,
            codebook_size=self.config.codebook_size,
            channel_dim=1,
            beta=self.config.beta,
            l2_normalize=self.config.l2_normalize,
            dead_code_after=self.config.dead_code_after,
        )
        self.post_quant_conv = nn.Conv2d(self.config.codebook_dim, net.z_channels, 1)

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    @property
    def downsample_factor(self) -> int:
        return self.config.net.downsample_factor

    def encode_features(self, images: torch.Tensor) -> torch.Tensor:
        """Continuous features before quantisation, (B, codebook_dim, h, w)."""
        check_images(
            images,
            channels=self.config.net.in_channels,
            multiple_of=self.downsample_factor,
            name="VQAutoencoder",
        )
        return self.quant_conv(self.encoder(images))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Image from quantized vectors (B, codebook_dim, h, w); not clamped."""
        return self.decoder(self.post_quant_conv(codes))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Token ids (B, h, w) of images in [-1, 1]."""
        return self.quantize.encode(self.encode_features(images))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) from token ids (B, h, w); not clamped."""
        if indices.ndim != 3:
            raise ImageInputError(f"decode expects token ids of shape (B, h, w), got {tuple(indices.shape)}")
        return self.decode_codes(self.quantize.indices_to_codes(indices))

    def forward(self, images: torch.Tensor) -> AutoencoderOutput:
        quantized = self.quantize(self.encode_features(images))
        return AutoencoderOutput(self.decode_codes(quantized.codes), quantized)


register_image_family(VQAutoencoder)
