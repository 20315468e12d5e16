"""Image tokenizers: VQ autoencoder (LlamaGen), multi-scale VQ autoencoder (VAR), KL autoencoder (MAR)."""

from genloom.image.tokenizers.conv_net import ConvDecoder, ConvEncoder, ConvNetConfig
from genloom.image.tokenizers.kl_autoencoder import KLAutoencoder, KLAutoencoderConfig
from genloom.image.tokenizers.multiscale_autoencoder import (
    MultiScaleVQAutoencoder,
    MultiScaleVQAutoencoderConfig,
)
from genloom.image.tokenizers.vq_autoencoder import AutoencoderOutput, VQAutoencoder, VQAutoencoderConfig

__all__ = [
    "AutoencoderOutput",
    "ConvDecoder",
    "ConvEncoder",
    "ConvNetConfig",
    "KLAutoencoder",
    "KLAutoencoderConfig",
    "MultiScaleVQAutoencoder",
    "MultiScaleVQAutoencoderConfig",
    "VQAutoencoder",
    "VQAutoencoderConfig",
]
