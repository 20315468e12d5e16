"""Tokenizers shared by every modality: learned quantizers, continuous latents, text tokenizers.

Quantizers share one verb set (`forward(z) -> QuantizerOutput`, `indices_to_codes`, `codebook_size`,
plus `encode` / `decode` / `vocab_size`); text tokenizers share `encode` / `decode` / `vocab_size`.
One file per idea, after vector-quantize-pytorch's layout.
"""

from genloom.core.tokenizers.base import Quantizer, QuantizerOutput, TextTokenizer
from genloom.core.tokenizers.bpe import BPETokenizer
from genloom.core.tokenizers.bytes import ByteTokenizer
from genloom.core.tokenizers.errors import (
    TokenIndexError,
    TokenizerError,
    TokenizerInputError,
    UnknownCharacterError,
)
from genloom.core.tokenizers.fsq import FSQ
from genloom.core.tokenizers.kl import MAR_KL16_SCALE, DiagonalGaussian, KLBottleneck, LatentOutput
from genloom.core.tokenizers.lfq import LFQ, BinarySphericalQuantizer
from genloom.core.tokenizers.multiscale_vq import (
    MultiScaleResidualVQ,
    Phi,
    PhiNonShared,
    PhiPartiallyShared,
    PhiShared,
)
from genloom.core.tokenizers.residual_vq import ResidualVQ
from genloom.core.tokenizers.vq import VectorQuantizer

__all__ = [
    "BPETokenizer",
    "BinarySphericalQuantizer",
    "ByteTokenizer",
    "DiagonalGaussian",
    "FSQ",
    "KLBottleneck",
    "LFQ",
    "LatentOutput",
    "MAR_KL16_SCALE",
    "MultiScaleResidualVQ",
    "Phi",
    "PhiNonShared",
    "PhiPartiallyShared",
    "PhiShared",
    "Quantizer",
    "QuantizerOutput",
    "ResidualVQ",
    "TextTokenizer",
    "TokenIndexError",
    "TokenizerError",
    "TokenizerInputError",
    "UnknownCharacterError",
    "VectorQuantizer",
]
