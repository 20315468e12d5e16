"""Converters from the official tokenizer checkpoints into genloom's modules.

- LlamaGen VQ (`tokenizer/tokenizer_image/vq_model.py`, e.g. vq_ds16_c2i.pt) -> `VQAutoencoder`
- VAR VQVAE (`models/vqvae.py`, vae_ch160v4096z32.pth) -> `MultiScaleVQAutoencoder`
- MAR KL-16 (`models/vae.py`, kl16.ckpt) -> `KLAutoencoder`

Every architecture number (channels, multipliers, blocks per level, attention placement, codebook size,
latent width, Phi sharing) is read from the state dict, so other configurations of the same official code
convert too. Only values absent from the weights (L2-normalised lookup, Phi ratio, scale list, latent
scale factor) are arguments, defaulting to the released models' settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from genloom.core.tokenizers.kl import MAR_KL16_SCALE
from genloom.core.tokenizers.multiscale_vq import DEFAULT_PATCH_NUMS
from genloom.image.convert.official import load_converted, load_official_state_dict, rename_keys
from genloom.image.errors import CheckpointError
from genloom.image.tokenizers.conv_net import ConvNetConfig
from genloom.image.tokenizers.kl_autoencoder import KLAutoencoder, KLAutoencoderConfig
from genloom.image.tokenizers.multiscale_autoencoder import (
    MultiScaleVQAutoencoder,
    MultiScaleVQAutoencoderConfig,
)
from genloom.image.tokenizers.vq_autoencoder import VQAutoencoder, VQAutoencoderConfig

StateDict = Mapping[str, torch.Tensor]


def _indices(state: StateDict, pattern: str) -> list[int]:
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    return sorted(found)


def _split_fused_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """VAR's attention blocks hold one `qkv` conv (3C out channels, q first); ours hold q, k, v."""
    out = {}
    for key, value in state.items():
        if ".qkv." in key:
            for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                out[key.replace(".qkv.", f".{name}.")] = part.clone()
        else:
            out[key] = value
    return out


def _llamagen_net_keys(state: StateDict) -> dict[str, torch.Tensor]:
    """LlamaGen's Encoder/Decoder names (conv_blocks.i.res/attn, mid.0/1/2) -> ours."""
    if any(".conv_shortcut." in k for k in state):
        raise CheckpointError(
            "LlamaGen blocks with use_conv_shortcut=True (3x3 shortcut convs) are not supported"
        )
    n_dec = len(_indices(state, r"decoder\.conv_blocks\.(\d+)\."))
    rules = [
        (r"^(encoder|decoder)\.mid\.0\.", r"\1.mid.block_1."),
        (r"^(encoder|decoder)\.mid\.1\.", r"\1.mid.attn_1."),
        (r"^(encoder|decoder)\.mid\.2\.", r"\1.mid.block_2."),
        # the decoder's conv_blocks run deepest first; our levels are indexed by resolution
        (r"^decoder\.conv_blocks\.(\d+)\.", lambda m: f"decoder.levels.{n_dec - 1 - int(m.group(1))}."),
        (r"^encoder\.conv_blocks\.(\d+)\.", r"encoder.levels.\1."),
        (r"\.levels\.(\d+)\.res\.", r".levels.\1.blocks."),
        (r"\.levels\.(\d+)\.attn\.", r".levels.\1.attns."),
        (r"\.levels\.(\d+)\.(downsample|upsample)\.conv\.", r".levels.\1.resample.conv."),
    ]
    return rename_keys(state, rules)


def _taming_net_keys(state: StateDict) -> dict[str, torch.Tensor]:
    """taming / LDM / VAR names (down.i.block/attn/downsample, up.i...) -> ours."""
    rules = [
        (r"^encoder\.down\.(\d+)\.", r"encoder.levels.\1."),
        (r"^decoder\.up\.(\d+)\.", r"decoder.levels.\1."),
        (r"\.levels\.(\d+)\.block\.", r".levels.\1.blocks."),
        (r"\.levels\.(\d+)\.attn\.", r".levels.\1.attns."),
        (r"\.levels\.(\d+)\.(downsample|upsample)\.conv\.", r".levels.\1.resample.conv."),
    ]
    return _split_fused_qkv(rename_keys(state, rules))


def infer_net_config(state: StateDict) -> ConvNetConfig:
    """Encoder / decoder shape from converted (our-naming) keys."""
    try:
        ch, in_channels = state["encoder.conv_in.weight"].shape[:2]
        levels = _indices(state, r"encoder\.levels\.(\d+)\.")
        ch_mult = [state[f"encoder.levels.{i}.blocks.0.conv1.weight"].shape[0] // ch for i in levels]
        num_res_blocks = len(_indices(state, r"encoder\.levels\.0\.blocks\.(\d+)\."))
        z_channels = state["decoder.conv_in.weight"].shape[1]
        encoder_out = state["encoder.conv_out.weight"].shape[0]
        out_channels = state["decoder.conv_out.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(
            f"not an encoder/decoder state dict of the expected layout: missing {err}"
        ) from None
    enc_attn = [i for i in levels if f"encoder.levels.{i}.attns.0.q.weight" in state]
    dec_attn = [i for i in levels if f"decoder.levels.{i}.attns.0.q.weight" in state]
    if enc_attn != dec_attn:
        raise CheckpointError(f"attention levels differ between encoder {enc_attn} and decoder {dec_attn}")
    if encoder_out not in (z_channels, 2 * z_channels):
        raise CheckpointError(f"encoder emits {encoder_out} channels but the decoder takes {z_channels}")
    return ConvNetConfig(
        in_channels=int(in_channels),
        out_channels=int(out_channels),
        ch=int(ch),
        ch_mult=ch_mult,
        num_res_blocks=num_res_blocks,
        attn_levels=enc_attn,
        mid_attention="encoder.mid.attn_1.q.weight" in state,
        z_channels=int(z_channels),
        double_z=encoder_out == 2 * z_channels,
    )


def convert_llamagen_vq(
    state: StateDict, *, l2_normalize: bool = True, source: str = "LlamaGen VQ"
) -> VQAutoencoder:
    """LlamaGen `VQModel` state dict -> VQAutoencoder (drops the `quantize.codebook_used` buffer).

    `l2_normalize` is LlamaGen's `codebook_l2_norm` (True for all released VQ-16/VQ-8 tokenizers).
    """
    params = {k: v for k, v in _llamagen_net_keys(state).items() if k != "quantize.codebook_used"}
    net = infer_net_config(params)
    codebook = params.get("quantize.embedding.weight")
    if codebook is None:
        raise CheckpointError(f"{source}: no quantize.embedding.weight; is this a LlamaGen VQ checkpoint?")
    config = VQAutoencoderConfig(
        net=net, codebook_size=codebook.shape[0], codebook_dim=codebook.shape[1], l2_normalize=l2_normalize
    )
    return load_converted(VQAutoencoder(config), params, source=source)


def convert_var_vqvae(
    state: StateDict,
    *,
    patch_nums: Sequence[int] = DEFAULT_PATCH_NUMS,
    quant_resi: float = 0.5,
    source: str = "VAR VQVAE",
) -> MultiScaleVQAutoencoder:
    """VAR `VQVAE` state dict -> MultiScaleVQAutoencoder (drops `quantize.ema_vocab_hit_SV`).

    The Phi sharing mode and count come from the `quantize.quant_resi.*` keys.
    """
    params = {k: v for k, v in _taming_net_keys(state).items() if k != "quantize.ema_vocab_hit_SV"}
    net = infer_net_config(params)
    codebook = params.get("quantize.embedding.weight")
    if codebook is None:
        raise CheckpointError(f"{source}: no quantize.embedding.weight; is this a VAR VQVAE checkpoint?")
    hits = state.get("quantize.ema_vocab_hit_SV")
    if hits is not None and hits.shape[0] != len(patch_nums):
        raise CheckpointError(
            f"{source}: the checkpoint was trained with {hits.shape[0]} scales, got patch_nums {list(patch_nums)}"
        )
    partial = _indices(params, r"quantize\.quant_resi\.qresi_ls\.(\d+)\.")
    if partial:
        share = len(partial)
    elif "quantize.quant_resi.qresi.weight" in params:
        share = 1
    elif _indices(params, r"quantize\.quant_resi\.(\d+)\."):
        share = 0
        if len(_indices(params, r"quantize\.quant_resi\.(\d+)\.")) != len(patch_nums):
            raise CheckpointError(
                f"{source}: non-shared Phi count differs from the number of scales {len(patch_nums)}"
            )
    else:
        share, quant_resi = 1, 0.0  # no Phi convs: plain residual quantisation
    config = MultiScaleVQAutoencoderConfig(
        net=net,
        codebook_size=codebook.shape[0],
        patch_nums=list(patch_nums),
        quant_conv_kernel=params["quant_conv.weight"].shape[-1],
        quant_resi=quant_resi,
        share_quant_resi=share,
    )
    return load_converted(MultiScaleVQAutoencoder(config), params, source=source)


def convert_mar_kl(
    state: StateDict, *, scale_factor: float = MAR_KL16_SCALE, source: str = "MAR KL autoencoder"
) -> KLAutoencoder:
    """MAR / LDM `AutoencoderKL` state dict -> KLAutoencoder; `scale_factor` is MAR's `vae_scale` (0.2325 for KL-16)."""
    params = {k: v for k, v in _taming_net_keys(state).items() if not k.startswith("loss.")}
    net = infer_net_config(params)
    if not net.double_z:
        raise CheckpointError(
            f"{source}: the encoder does not emit mean and log-variance; not a KL autoencoder"
        )
    config = KLAutoencoderConfig(
        net=net, embed_dim=params["post_quant_conv.weight"].shape[1], scale_factor=scale_factor
    )
    return load_converted(KLAutoencoder(config), params, source=source)


def load_llamagen_vq(path: str | Path, **kwargs) -> VQAutoencoder:
    """Convert an official LlamaGen VQ file (e.g. vq_ds16_c2i.pt) read safely from a local path."""
    return convert_llamagen_vq(load_official_state_dict(path), source=str(path), **kwargs)


def load_var_vqvae(path: str | Path, **kwargs) -> MultiScaleVQAutoencoder:
    """Convert an official VAR VQVAE file (vae_ch160v4096z32.pth) read safely from a local path."""
    return convert_var_vqvae(load_official_state_dict(path), source=str(path), **kwargs)


def load_mar_kl(path: str | Path, **kwargs) -> KLAutoencoder:
    """Convert MAR's KL-16 file (kl16.ckpt, {"model": state_dict}) read safely from a local path."""
    return convert_mar_kl(load_official_state_dict(path), source=str(path), **kwargs)
