"""Converters from official checkpoints (LlamaGen, VAR, MAR) into genloom-image modules."""

from genloom.image.convert.generators import (
    convert_llamagen_gpt,
    convert_mar,
    convert_var,
    load_llamagen_gpt,
    load_mar,
    load_var,
)
from genloom.image.convert.official import load_official_state_dict, unwrap_state_dict
from genloom.image.convert.tokenizers import (
    convert_llamagen_vq,
    convert_mar_kl,
    convert_var_vqvae,
    infer_net_config,
    load_llamagen_vq,
    load_mar_kl,
    load_var_vqvae,
)

__all__ = [
    "convert_llamagen_gpt",
    "convert_mar",
    "load_mar",
    "convert_var",
    "load_var",
    "load_llamagen_gpt",
    "convert_llamagen_vq",
    "convert_mar_kl",
    "convert_var_vqvae",
    "infer_net_config",
    "load_llamagen_vq",
    "load_mar_kl",
    "load_official_state_dict",
    "load_var_vqvae",
    "unwrap_state_dict",
]
