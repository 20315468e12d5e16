"""Converters from official generator checkpoints into genloom-image models.

- LlamaGen GPT (`autoregressive/models/gpt.py`, c2i_{B,L,XL,XXL,3B}_*.pt) -> `RasterAR`

Widths, depth, vocabulary, class count, KV heads and MLP width are read from the weights; the head count
(not recoverable from weight shapes) comes from LlamaGen's named sizes or an argument, and the token grid
(`block_size` in LlamaGen) is an argument defaulting to 16x16 (256px images with VQ-16).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from genloom.image.convert.official import load_converted, load_official_state_dict, rename_keys
from genloom.image.errors import CheckpointError
from genloom.image.models.raster_ar import RasterAR, RasterARConfig, llamagen_transformer_config

# (dim, n_layer) -> n_head of LlamaGen's GPT_B / L / XL / XXL / 3B / 7B (gpt.py)
LLAMAGEN_HEADS = {
    (768, 12): 12,
    (1024, 24): 16,
    (1280, 36): 20,
    (1536, 48): 24,
    (3200, 24): 32,
    (4096, 32): 32,
}

_LLAMAGEN_RULES = [
    (r"^layers\.", "transformer.layers."),
    (r"\.attention\.", ".attn."),
    (r"\.attention_norm\.", ".attn_norm."),
    (r"\.ffn_norm\.", ".mlp_norm."),
    (r"\.feed_forward\.", ".mlp."),
    (r"^(tok_embeddings|norm|output)\.", r"transformer.\1."),
]


def convert_llamagen_gpt(
    state: Mapping[str, torch.Tensor],
    *,
    n_heads: int | None = None,
    grid: tuple[int, int] = (16, 16),
    cls_token_num: int = 1,
    rope_base: float = 10000.0,
    norm_eps: float = 1e-5,
    source: str = "LlamaGen GPT",
) -> RasterAR:
    """LlamaGen c2i `Transformer` state dict -> RasterAR (drops `freqs_cis`, masks and KV-cache buffers)."""
    params = {
        k: v
        for k, v in rename_keys(state, _LLAMAGEN_RULES).items()
        if not re.search(r"(freqs_cis|causal_mask|kv_cache\.)", k)
    }
    try:
        vocab, dim = params["transformer.tok_embeddings.weight"].shape
        n_classes = params["cls_embedding.embedding_table.weight"].shape[0] - 1
        hidden = params["transformer.layers.0.mlp.w1.weight"].shape[0]
        qkv_rows = params["transformer.layers.0.attn.wqkv.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(
            f"{source}: not a LlamaGen class-to-image GPT state dict (missing {err})"
        ) from None
    n_layers = 1 + max(int(m.group(1)) for k in params if (m := re.match(r"transformer\.layers\.(\d+)\.", k)))
    n_heads = n_heads or LLAMAGEN_HEADS.get((dim, n_layers))
    if n_heads is None:
        raise CheckpointError(
            f"{source}: dim {dim} / {n_layers} layers is not a named LlamaGen size; pass n_heads"
        )
    head_dim = dim // n_heads
    n_kv_heads = (qkv_rows - dim) // (2 * head_dim)
    tcfg = llamagen_transformer_config(
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        vocab_size=vocab,
        grid=grid,
        cls_token_num=cls_token_num,
        n_kv_heads=None if n_kv_heads == n_heads else n_kv_heads,
        mlp_hidden_dim=hidden,
        rope_theta=rope_base,
        norm_eps=norm_eps,
    )
    config = RasterARConfig(
        transformer=tcfg.to_dict(), num_classes=n_classes, cls_token_num=cls_token_num, grid=tuple(grid)
    )
    return load_converted(RasterAR(config), params, source=source)


def load_llamagen_gpt(path: str | Path, **kwargs) -> RasterAR:
    """Convert an official LlamaGen GPT file (its "model" entry) read safely from a local path."""
    return convert_llamagen_gpt(load_official_state_dict(path), source=str(path), **kwargs)
