"""Converters from official generator checkpoints into genloom-image models.

- LlamaGen GPT (`autoregressive/models/gpt.py`, c2i_{B,L,XL,XXL,3B}_*.pt) -> `RasterAR`
- VAR (`models/var.py`, var_d{16,20,24,30}.pth) -> `NextScaleAR`
- MAR (`models/mar.py`, MAR-B/L/H checkpoint-last.pth, EMA weights) -> `MaskedAutoregressive`

Widths, depth, vocabulary, class count, KV heads and MLP width are read from the weights; the head count
(not recoverable from weight shapes) comes from LlamaGen's named sizes or an argument, and the token grid
(`block_size` in LlamaGen) is an argument defaulting to 16x16 (256px images with VQ-16).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from genloom.core.tokenizers.multiscale_vq import DEFAULT_PATCH_NUMS
from genloom.image.convert.official import load_converted, load_official_state_dict, rename_keys
from genloom.image.errors import CheckpointError
from genloom.image.models.masked_autoregressive import MARConfig, MaskedAutoregressive, vit_config
from genloom.image.models.next_scale import NextScaleAR, NextScaleConfig, var_transformer_config
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


_VAR_RULES = [
    (r"^blocks\.(\d+)\.ada_lin\.", r"transformer.layers.\1.adaln."),
    (r"^blocks\.(\d+)\.attn\.mat_qkv\.", r"transformer.layers.\1.attn.wqkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"transformer.layers.\1.attn.wo."),
    (r"^blocks\.(\d+)\.attn\.scale_mul_1H11$", r"transformer.layers.\1.attn.scale_mul"),
    (r"^blocks\.(\d+)\.attn\.(q_bias|v_bias)$", r"transformer.layers.\1.attn.\2"),
    (r"^blocks\.(\d+)\.ffn\.", r"transformer.layers.\1.mlp."),
    (r"^head_nm\.ada_lin\.", "transformer.norm.adaln."),
    (r"^head\.", "transformer.output."),
    (r"^class_emb\.weight$", "class_emb.embedding_table.weight"),
]


def convert_var(
    state: Mapping[str, torch.Tensor],
    *,
    patch_nums: Sequence[int] = DEFAULT_PATCH_NUMS,
    n_heads: int | None = None,
    norm_eps: float = 1e-6,
    source: str = "VAR",
) -> NextScaleAR:
    """VAR `VAR` state dict -> NextScaleAR (drops `lvl_1L`, `attn_bias_for_masking`, `zero_k_bias`).

    Heads come from `scale_mul_1H11` (cosine attention) or `n_heads` (default: depth, as `build_vae_var`).
    Without cosine attention VAR's softmax scale is 0.25 / sqrt(head_dim), which the config reproduces.
    """
    if any(k.startswith("shared_ada_lin.") for k in state):
        raise CheckpointError(
            f"{source}: VAR with shared_aln=True is not supported (released VAR models use False)"
        )
    params = {
        k: v
        for k, v in rename_keys(state, _VAR_RULES).items()
        if not re.search(r"(^lvl_1L$|^attn_bias_for_masking$|zero_k_bias$)", k)
    }
    try:
        dim, codebook_dim = params["word_embed.weight"].shape
        vocab = params["transformer.output.weight"].shape[0]
        n_classes = params["class_emb.embedding_table.weight"].shape[0] - 1
        n_tokens = params["pos_1LC"].shape[1]
        n_scales = params["lvl_embed.weight"].shape[0]
        hidden = params["transformer.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"{source}: not a VAR state dict (missing {err})") from None
    if len(patch_nums) != n_scales or sum(p * p for p in patch_nums) != n_tokens:
        raise CheckpointError(
            f"{source}: the checkpoint has {n_scales} scales and {n_tokens} tokens; patch_nums {list(patch_nums)} "
            f"give {len(patch_nums)} scales and {sum(p * p for p in patch_nums)} tokens"
        )
    depth = 1 + max(int(m.group(1)) for k in params if (m := re.match(r"transformer\.layers\.(\d+)\.", k)))
    cosine = "transformer.layers.0.attn.scale_mul" in params
    if cosine:
        n_heads = params["transformer.layers.0.attn.scale_mul"].shape[1]
    n_heads = n_heads or depth
    overrides: dict = {"mlp_hidden_dim": hidden, "norm_eps": norm_eps}
    if not cosine:
        overrides.update(qk_norm="none", attn_scale=0.25 / math.sqrt(dim // n_heads))
    tcfg = var_transformer_config(
        dim=dim, depth=depth, n_heads=n_heads, vocab_size=vocab, patch_nums=patch_nums, **overrides
    )
    config = NextScaleConfig(
        transformer=tcfg.to_dict(),
        num_classes=n_classes,
        patch_nums=list(patch_nums),
        codebook_dim=codebook_dim,
    )
    return load_converted(NextScaleAR(config), params, source=source)


def load_var(path: str | Path, **kwargs) -> NextScaleAR:
    """Convert an official VAR file (var_d16.pth ... var_d30.pth) read safely from a local path."""
    return convert_var(load_official_state_dict(path), source=str(path), **kwargs)


# (dim, depth) -> heads of MAR-B / L / H (models/mar.py mar_base, mar_large, mar_huge)
MAR_HEADS = {(768, 12): 12, (1024, 16): 16, (1280, 20): 16}

_MAR_RULES = [
    (r"^(encoder|decoder)_blocks\.(\d+)\.norm1\.", r"\1.layers.\2.attn_norm."),
    (r"^(encoder|decoder)_blocks\.(\d+)\.norm2\.", r"\1.layers.\2.mlp_norm."),
    (r"^(encoder|decoder)_blocks\.(\d+)\.attn\.qkv\.", r"\1.layers.\2.attn.wqkv."),
    (r"^(encoder|decoder)_blocks\.(\d+)\.attn\.proj\.", r"\1.layers.\2.attn.wo."),
    (r"^(encoder|decoder)_blocks\.(\d+)\.mlp\.", r"\1.layers.\2.mlp."),
    (r"^(encoder|decoder)_norm\.", r"\1.norm."),
    (r"^(encoder|decoder|diffusion)_pos_embed_learned$", r"\1_pos_embed"),
    (r"^diffloss\.net\.time_embed\.mlp\.", "head.net.time_embed."),
    (r"^diffloss\.net\.res_blocks\.(\d+)\.in_ln\.", r"head.net.blocks.\1.norm."),
    (r"^diffloss\.net\.res_blocks\.(\d+)\.adaLN_modulation\.", r"head.net.blocks.\1.modulation."),
    (r"^diffloss\.net\.res_blocks\.(\d+)\.mlp\.", r"head.net.blocks.\1.mlp."),
    (r"^diffloss\.net\.final_layer\.adaLN_modulation\.", "head.net.final.modulation."),
    (r"^diffloss\.net\.final_layer\.linear\.", "head.net.final.linear."),
    (r"^diffloss\.net\.", "head.net."),
]


def convert_mar(
    state: Mapping[str, torch.Tensor],
    *,
    encoder_heads: int | None = None,
    decoder_heads: int | None = None,
    patch_size: int = 1,
    norm_eps: float = 1e-6,
    diffusion_steps: int = 100,
    source: str = "MAR",
) -> MaskedAutoregressive:
    """MAR `MAR` state dict (its `model_ema` for the released weights) -> MaskedAutoregressive.

    Head counts come from MAR's named sizes or the arguments; `norm_eps` is the ViT blocks' LayerNorm eps
    (1e-6 in mar_base/large/huge; MAR's constructor default nn.LayerNorm has 1e-5).
    """
    params = rename_keys(state, _MAR_RULES)
    try:
        enc_dim, token_dim = params["z_proj.weight"].shape
        dec_dim = params["decoder_embed.weight"].shape[0]
        seq_len = params["diffusion_pos_embed"].shape[1]
        buffer = params["encoder_pos_embed"].shape[1] - seq_len
        n_classes = params["class_emb.weight"].shape[0]
        width = params["head.net.cond_embed.weight"].shape[0]
        enc_hidden = params["encoder.layers.0.mlp.fc1.weight"].shape[0]
        dec_hidden = params["decoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"{source}: not a MAR state dict (missing {err})") from None

    def depth(prefix: str) -> int:
        return 1 + max(int(m.group(1)) for k in params if (m := re.match(rf"{prefix}\.(\d+)\.", k)))

    enc_depth, dec_depth, diff_depth = (
        depth("encoder.layers"),
        depth("decoder.layers"),
        depth("head.net.blocks"),
    )
    enc_heads = encoder_heads or MAR_HEADS.get((enc_dim, enc_depth))
    dec_heads = decoder_heads or MAR_HEADS.get((dec_dim, dec_depth))
    if enc_heads is None or dec_heads is None:
        raise CheckpointError(
            f"{source}: not a named MAR size ({enc_dim}x{enc_depth}); pass encoder_heads / decoder_heads"
        )
    side = math.isqrt(seq_len)
    if side * side != seq_len or token_dim % (patch_size * patch_size):
        raise CheckpointError(
            f"{source}: {seq_len} tokens of dim {token_dim} do not form a square grid with patch {patch_size}"
        )
    config = MARConfig(
        encoder=vit_config(
            dim=enc_dim, depth=enc_depth, n_heads=enc_heads, mlp_ratio=enc_hidden / enc_dim, norm_eps=norm_eps
        ),
        decoder=vit_config(
            dim=dec_dim, depth=dec_depth, n_heads=dec_heads, mlp_ratio=dec_hidden / dec_dim, norm_eps=norm_eps
        ),
        num_classes=n_classes,
        token_dim=token_dim,
        vae_channels=token_dim // (patch_size * patch_size),
        patch_size=patch_size,
        grid=(side, side),
        buffer_size=buffer,
        diffusion_width=width,
        diffusion_depth=diff_depth,
        diffusion_steps=diffusion_steps,
    )
    return load_converted(MaskedAutoregressive(config), params, source=source)


def load_mar(path: str | Path, *, prefer_ema: bool = True, **kwargs) -> MaskedAutoregressive:
    """Convert an official MAR checkpoint (checkpoint-last.pth; EMA weights by default) from a local path."""
    return convert_mar(load_official_state_dict(path, prefer_ema=prefer_ema), source=str(path), **kwargs)
