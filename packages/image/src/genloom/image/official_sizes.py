"""The official LlamaGen and VAR architectures with random weights, as image pipelines.

For timing and memory at the published sizes without the multi-gigabyte checkpoints (`genloom bench
llamagen-b --random-weights`): the generator and its tokenizer are built exactly as the converters build them
from the official files (LlamaGen: GPT of the named size + VQ-16; VAR: depth-d transformer, width 64 d, d
heads + the multi-scale VQVAE), initialised at random. The samples are noise; the work per sample is real.
"""

from __future__ import annotations

import torch

from genloom.image.errors import CheckpointError
from genloom.image.models.next_scale import NextScaleAR, NextScaleConfig, var_transformer_config
from genloom.image.models.raster_ar import RasterAR, RasterARConfig, llamagen_transformer_config
from genloom.image.official import OFFICIAL_CHECKPOINTS
from genloom.image.pipeline import ImagePipeline
from genloom.image.tokenizers import MultiScaleVQAutoencoder, VQAutoencoder
from genloom.image.tokenizers.multiscale_autoencoder import MultiScaleVQAutoencoderConfig
from genloom.image.tokenizers.vq_autoencoder import VQAutoencoderConfig

# (width, layers, heads) of the class-to-image GPTs (LlamaGen's GPT_B ... GPT_3B)
LLAMAGEN_SIZES = {
    "llamagen-b": (768, 12, 12),
    "llamagen-l": (1024, 24, 16),
    "llamagen-xl": (1280, 36, 20),
    "llamagen-xxl": (1536, 48, 24),
    "llamagen-3b": (3200, 24, 32),
}
VAR_DEPTHS = {"var-d16": 16, "var-d20": 20, "var-d24": 24, "var-d30": 30}
NUM_CLASSES = 1000
RANDOM_WEIGHT_GENERATORS = tuple(LLAMAGEN_SIZES) + tuple(VAR_DEPTHS)


def random_llamagen(
    dim: int, layers: int, heads: int, *, grid: tuple[int, int] = (16, 16), vocab_size: int = 16384
) -> RasterAR:
    """A LlamaGen class-to-image GPT of the given shape (ImageNet's 1000 classes), at random init."""
    tcfg = llamagen_transformer_config(
        dim=dim, n_layers=layers, n_heads=heads, vocab_size=vocab_size, grid=grid
    )
    return RasterAR(RasterARConfig(transformer=tcfg.to_dict(), num_classes=NUM_CLASSES, grid=tuple(grid)))


def random_var(
    depth: int, *, heads: int | None = None, tokenizer_config: MultiScaleVQAutoencoderConfig | None = None
) -> tuple[NextScaleAR, MultiScaleVQAutoencoder]:
    """A VAR transformer of depth d (width 64 d, d heads unless given) and its multi-scale VQVAE (the
    release's by default), both at random init."""
    tokenizer = MultiScaleVQAutoencoder(tokenizer_config or MultiScaleVQAutoencoderConfig())
    patch_nums = list(tokenizer.config.patch_nums)
    tcfg = var_transformer_config(
        dim=64 * depth, depth=depth, n_heads=heads or depth, vocab_size=tokenizer.config.codebook_size,
        patch_nums=patch_nums,
    )  # fmt: skip
    model = NextScaleAR(
        NextScaleConfig(transformer=tcfg.to_dict(), num_classes=NUM_CLASSES, patch_nums=patch_nums)
    )
    return model, tokenizer


def random_official_pipeline(name: str, *, seed: int = 0) -> ImagePipeline:
    """An ImageNet-sized pipeline of the official architecture `name`, randomly initialised (float32, CPU),
    with the official sampling defaults in its info (LlamaGen: CFG 4.0, top-k 2000; VAR: CFG 1.5, top-k
    900, top-p 0.96)."""
    torch.manual_seed(seed)
    classes = [str(c) for c in range(NUM_CLASSES)]
    if name in LLAMAGEN_SIZES:
        dim, layers, heads = LLAMAGEN_SIZES[name]
        grid = tuple(OFFICIAL_CHECKPOINTS[name].kwargs.get("grid", (16, 16)))
        tokenizer = VQAutoencoder(VQAutoencoderConfig())
        generator = random_llamagen(dim, layers, heads, grid=grid, vocab_size=tokenizer.config.codebook_size)
        info = {"cfg_scale": 4.0, "top_k": 2000, "random_weights": True}
        return ImagePipeline(tokenizer, generator, class_names=classes, info=info)
    if name in VAR_DEPTHS:
        generator, tokenizer = random_var(VAR_DEPTHS[name])
        info = {"cfg_scale": 1.5, "top_k": 900, "top_p": 0.96, "random_weights": True}
        return ImagePipeline(tokenizer, generator, class_names=classes, info=info)
    raise CheckpointError(
        f"{name!r} has no random-weight architecture here; expected one of {list(RANDOM_WEIGHT_GENERATORS)}"
    )
