"""Generator families: raster AR (LlamaGen), next-scale (VAR), masked tokens (MaskGIT), continuous tokens (MAR)."""

from genloom.image.models.class_embedding import ClassEmbedding
from genloom.image.models.diffusion_head import DiffusionHead, DiffusionMLP
from genloom.image.models.masked_autoregressive import MARConfig, MaskedAutoregressive
from genloom.image.models.masked_tokens import MaskGIT, MaskGITConfig
from genloom.image.models.next_scale import NextScaleAR, NextScaleConfig
from genloom.image.models.raster_ar import RasterAR, RasterARConfig

__all__ = [
    "ClassEmbedding",
    "DiffusionHead",
    "DiffusionMLP",
    "MARConfig",
    "MaskGIT",
    "MaskGITConfig",
    "MaskedAutoregressive",
    "NextScaleAR",
    "NextScaleConfig",
    "RasterAR",
    "RasterARConfig",
]
