"""The official MDLM backbone (a DiT over tokens, kuleshov-group/mdlm-owt) and SEDD's (louaaron/sedd-small,
the same DiT) on the core transformer, with converters from the official safetensors layouts (MDLM's
`backbone.` names, or its EMA as a parameter-order list; SEDD's unprefixed names).

Architecture facts: a token embedding `vocab_embed.embedding`; a noise-level embedder `sigma_map`
(256 sinusoidal features -> Linear -> SiLU -> Linear); blocks with weight-only LayerNorms modulated by
AdaLN (shift, scale, gate for attention and MLP, from SiLU(cond)), a fused `attn_qkv` ([q; k; v] rows),
rotate-half RoPE (theta 10,000), `attn_out` without bias, a tanh-GELU MLP with biases; a final
AdaLN-modulated LayerNorm and a biased `linear` head. mdlm-owt runs with sigma = 0 (no time conditioning).
Every LayerNorm weight is folded into the scale of its AdaLN (exact: the scale is affine in the
condition), since the core's modulated norms carry no weight of their own. Sampling uses the core absorbing-state sampler.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from genloom.core.nn import Transformer, TransformerConfig
from genloom.core.sampling.discrete_diffusion import (
    LogLinearNoise,
    MaskedDiffusionOutput,
    MaskedDiffusionSampler,
)
from genloom.core.zoo import from_pretrained, save_pretrained
from genloom.text.errors import TextInputError

__all__ = [
    "MDLM_OWT",
    "SEDD_SMALL",
    "MDLMDiT",
    "MDLMDiTConfig",
    "SEDDDiT",
    "convert_mdlm_state_dict",
    "load_mdlm_checkpoint",
    "load_sedd_checkpoint",
]

SIGMA_FEATURES = 256


@dataclass
class MDLMDiTConfig:
    """Sizes of the official MDLM DiT (mdlm-owt: GPT-2 vocabulary + mask, 12 x 768, 1,024 tokens)."""

    vocab_size: int = 50258
    mask_id: int = 50257
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    cond_dim: int = 128
    max_seq_len: int = 1024

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(
            dim=self.dim,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            vocab_size=self.vocab_size,
            max_seq_len=self.max_seq_len,
            mlp="gelu_tanh",
            mlp_bias=True,
            norm="layernorm",
            fused_qkv=True,
            mask="bidirectional",
            rope="1d",
            rope_layout="half",
            rope_theta=10000.0,
            adaln="adaln",
            cond_dim=self.cond_dim,
            output_bias=True,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MDLM_OWT = MDLMDiTConfig()


def sigma_features(sigma: Tensor, size: int = SIGMA_FEATURES) -> Tensor:
    """[cos(sigma f), sin(sigma f)] with f = 10000^(-k / (size/2)): [B, size]."""
    half = size // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half
    )
    args = sigma.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MDLMDiT(nn.Module):
    """Tokens (and noise level sigma, default 0) -> float32 logits [B, L, V] with the mask id at -inf."""

    def __init__(self, config: MDLMDiTConfig) -> None:
        super().__init__()
        self.config = config
        self.noise = LogLinearNoise()
        self.sigma_map = nn.Sequential(
            nn.Linear(SIGMA_FEATURES, config.cond_dim), nn.SiLU(), nn.Linear(config.cond_dim, config.cond_dim)
        )
        self.backbone = Transformer(config.transformer_config())

    def logits(self, tokens: Tensor, sigma: Tensor | None = None) -> Tensor:
        if tokens.dim() != 2 or tokens.shape[1] > self.config.max_seq_len:
            raise TextInputError(
                f"expected tokens [B, <= {self.config.max_seq_len}], got {tuple(tokens.shape)}"
            )
        if sigma is None:
            sigma = torch.zeros(tokens.shape[0], device=tokens.device)
        cond = self.sigma_map(sigma_features(sigma))  # the blocks apply SiLU themselves
        logits = self.backbone(tokens, cond=cond)
        logits[..., self.config.mask_id] = float("-inf")
        return logits

    @torch.no_grad()
    def sample(
        self, batch_size: int, length: int, *, steps: int = 128, generator: torch.Generator | None = None
    ) -> MaskedDiffusionOutput:
        """Ancestral sampling from all-mask with the core sampler (skips steps that reveal nothing)."""
        device = self.backbone.tok_embeddings.weight.device
        sampler = MaskedDiffusionSampler(mask_token_id=self.config.mask_id, noise=self.noise)
        sampler.set_steps(steps)
        tokens = torch.full((batch_size, length), self.config.mask_id, dtype=torch.long, device=device)
        return sampler.sample(self.logits, tokens, generator=generator)


def official_parameter_names(n_layers: int) -> list[str]:
    """The official DiT's parameters in `named_parameters()` order (the order of MDLM's EMA list)."""
    names = ["vocab_embed.embedding"] + [f"sigma_map.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    block = ["norm1.weight", "attn_qkv.weight", "attn_out.weight", "norm2.weight", "mlp.0.weight", "mlp.0.bias",
             "mlp.2.weight", "mlp.2.bias", "adaLN_modulation.weight", "adaLN_modulation.bias"]  # fmt: skip
    names += [f"blocks.{i}.{p}" for i in range(n_layers) for p in block]
    names += [f"output_layer.{p}" for p in ("norm_final.weight", "linear.weight", "linear.bias",
                                            "adaLN_modulation.weight", "adaLN_modulation.bias")]  # fmt: skip
    return names


def official_shapes(config: MDLMDiTConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every official parameter for `config` (checked before any conversion)."""
    d, c, v = config.dim, config.cond_dim, config.vocab_size
    block = {"norm1.weight": (d,), "attn_qkv.weight": (3 * d, d), "attn_out.weight": (d, d), "norm2.weight": (d,),
             "mlp.0.weight": (4 * d, d), "mlp.0.bias": (4 * d,), "mlp.2.weight": (d, 4 * d), "mlp.2.bias": (d,),
             "adaLN_modulation.weight": (6 * d, c), "adaLN_modulation.bias": (6 * d,)}  # fmt: skip
    shapes = {"vocab_embed.embedding": (v, d), "sigma_map.mlp.0.weight": (c, SIGMA_FEATURES),
              "sigma_map.mlp.0.bias": (c,), "sigma_map.mlp.2.weight": (c, c), "sigma_map.mlp.2.bias": (c,),
              "output_layer.norm_final.weight": (d,), "output_layer.linear.weight": (v, d),
              "output_layer.linear.bias": (v,), "output_layer.adaLN_modulation.weight": (2 * d, c),
              "output_layer.adaLN_modulation.bias": (2 * d,)}  # fmt: skip
    shapes.update({f"blocks.{i}.{k}": s for i in range(config.n_layers) for k, s in block.items()})
    return shapes


_BLOCK_MAP = {
    "attn_qkv.weight": "attn.wqkv.weight",
    "attn_out.weight": "attn.wo.weight",
    "mlp.0.weight": "mlp.fc1.weight",
    "mlp.0.bias": "mlp.fc1.bias",
    "mlp.2.weight": "mlp.fc2.weight",
    "mlp.2.bias": "mlp.fc2.bias",
}


def fold_norm_weight(
    weight: Tensor, bias: Tensor, norm_weight: Tensor, chunk: int, dim: int
) -> tuple[Tensor, Tensor]:
    """Fold a LayerNorm weight w into the `chunk`-th (scale) slice of an AdaLN Linear: norm(x) w (1 + s) + h
    equals norm(x) (1 + s') + h with s' = w (1 + s) - 1, still affine in the condition (exact)."""
    weight, bias, w = weight.float().clone(), bias.float().clone(), norm_weight.float()
    rows = slice(chunk * dim, (chunk + 1) * dim)
    weight[rows] = w[:, None] * weight[rows]
    bias[rows] = w * bias[rows] + w - 1
    return weight, bias


def convert_mdlm_state_dict(official: dict[str, Tensor], config: MDLMDiTConfig) -> dict[str, Tensor]:
    """Official tensors (names with or without the `backbone.` prefix; `rotary_emb.inv_freq` ignored) ->
    the state dict of `MDLMDiT`. An EMA given as `ema.shadow_params.<i>` replaces the weights in official
    parameter order. Missing or unexpected names are an error."""
    strip = {
        k.removeprefix("backbone."): v for k, v in official.items() if not k.endswith("rotary_emb.inv_freq")
    }
    ema = {k: v for k, v in strip.items() if k.startswith("ema.shadow_params.")}
    weights = {k: v for k, v in strip.items() if not k.startswith("ema.")}
    names = official_parameter_names(config.n_layers)
    if ema:
        if len(ema) != len(names):
            raise TextInputError(
                f"EMA list has {len(ema)} tensors; the official DiT has {len(names)} parameters"
            )
        weights = {name: ema[f"ema.shadow_params.{i}"] for i, name in enumerate(names)}
    unexpected, missing = sorted(set(weights) - set(names)), sorted(set(names) - set(weights))
    if unexpected or missing:
        raise TextInputError(
            f"not an MDLM DiT checkpoint: unexpected {unexpected[:3]}, missing {missing[:3]}"
        )
    for name, shape in official_shapes(config).items():
        if tuple(weights[name].shape) != shape:
            raise TextInputError(f"{name}: checkpoint shape {tuple(weights[name].shape)} != config's {shape}")
    out = {
        "backbone.tok_embeddings.weight": weights["vocab_embed.embedding"],
        "backbone.output.weight": weights["output_layer.linear.weight"],
        "backbone.output.bias": weights["output_layer.linear.bias"],
    }
    for i in (0, 2):
        for p in ("weight", "bias"):
            out[f"sigma_map.{i}.{p}"] = weights[f"sigma_map.mlp.{i}.{p}"]
    for i in range(config.n_layers):
        for theirs, ours in _BLOCK_MAP.items():
            out[f"backbone.layers.{i}.{ours}"] = weights[f"blocks.{i}.{theirs}"]
        # the core's modulated norms carry no weight: fold norm1 into scale_attn (chunk 1), norm2 into
        # scale_mlp (chunk 4); the chunk order (shift, scale, gate) x (attn, mlp) is the same in both
        ada = weights[f"blocks.{i}.adaLN_modulation.weight"], weights[f"blocks.{i}.adaLN_modulation.bias"]
        ada = fold_norm_weight(*ada, weights[f"blocks.{i}.norm1.weight"], 1, config.dim)
        ada = fold_norm_weight(*ada, weights[f"blocks.{i}.norm2.weight"], 4, config.dim)
        out[f"backbone.layers.{i}.adaln.1.weight"], out[f"backbone.layers.{i}.adaln.1.bias"] = ada
    final = weights["output_layer.adaLN_modulation.weight"], weights["output_layer.adaLN_modulation.bias"]
    final = fold_norm_weight(*final, weights["output_layer.norm_final.weight"], 1, config.dim)  # shift, scale
    out["backbone.norm.adaln.1.weight"], out["backbone.norm.adaln.1.bias"] = final
    return out


def load_mdlm_checkpoint(path: str | os.PathLike, config: MDLMDiTConfig = MDLM_OWT) -> MDLMDiT:
    """An `MDLMDiT` in float32 eval mode from an official safetensors file (offline)."""
    path = Path(path).expanduser()
    if path.suffix != ".safetensors" or not path.is_file():
        raise TextInputError(f"{path} is not a .safetensors file (pickled checkpoints are not read)")
    model = MDLMDiT(config)
    converted = convert_mdlm_state_dict(load_file(str(path)), config)
    expected = model.state_dict()
    for name, tensor in converted.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise TextInputError(
                f"{name}: checkpoint shape {tuple(tensor.shape)} != config's {tuple(expected[name].shape)}"
            )
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    return model.eval()


# SEDD (Lou et al. 2024; louaaron/sedd-small) uses the same DiT with time conditioning on the total noise
# sigma_bar, and reads its output as log concrete scores: out - log(e^sigma_bar - 1) - log(V - 1), with the
# score of the current token set to 0 (log 1). Its checkpoint names carry no `backbone.` prefix.
SEDD_SMALL = MDLMDiTConfig()


class SEDDDiT(MDLMDiT):
    """The official SEDD network: tokens x_t and total noise sigma_bar [B] -> log scores [B, L, V]."""

    def log_score(self, tokens: Tensor, sigma_bar: Tensor) -> Tensor:
        cond = self.sigma_map(sigma_features(sigma_bar))
        out = self.backbone(tokens, cond=cond)
        esigm1 = torch.where(sigma_bar < 0.5, torch.expm1(sigma_bar), sigma_bar.exp() - 1)
        out = out - esigm1.log()[:, None, None] - math.log(out.shape[-1] - 1)
        return torch.scatter(out, -1, tokens[..., None], torch.zeros_like(out[..., :1]))

    @torch.no_grad()
    def sample_scores(
        self, batch_size: int, length: int, *, steps: int = 128, strategy: str = "analytic",
        generator: torch.Generator | None = None,
    ):  # fmt: skip
        """SEDD's own sampler (`genloom.text.sedd.tau_leaping_sample`) on this network's log scores."""
        from genloom.text.sedd import tau_leaping_sample

        if not 1 <= length <= self.config.max_seq_len:
            raise TextInputError(f"length must lie in [1, {self.config.max_seq_len}], got {length}")
        device = self.backbone.tok_embeddings.weight.device
        return tau_leaping_sample(
            self.log_score, LogLinearNoise(), self.config.mask_id, batch_size, length,
            steps=steps, strategy=strategy, generator=generator, device=device,
        )  # fmt: skip


def load_sedd_checkpoint(path: str | os.PathLike, config: MDLMDiTConfig = SEDD_SMALL) -> SEDDDiT:
    """A `SEDDDiT` in float32 eval mode from an official safetensors file (offline)."""
    path = Path(path).expanduser()
    if path.suffix != ".safetensors" or not path.is_file():
        raise TextInputError(f"{path} is not a .safetensors file (pickled checkpoints are not read)")
    model = SEDDDiT(config)
    model.load_state_dict(
        {k: v.float() for k, v in convert_mdlm_state_dict(load_file(str(path)), config).items()}, strict=True
    )
    return model.eval()


def build_dit(arguments: dict[str, Any], *, sedd: bool = False) -> MDLMDiT:
    """Core zoo family builder ("text.mdlm_dit" / "text.sedd_dit"): {"model": config dict} -> module."""
    config = MDLMDiTConfig(**arguments["model"])
    return SEDDDiT(config) if sedd else MDLMDiT(config)


def convert_official_preset(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, preset: Any
) -> Path:
    """Core zoo converter: an official MDLM / SEDD safetensors file -> a preset folder (`model/`, float32)."""
    config = MDLMDiTConfig(**preset.config["model"])
    sedd = preset.family == "text.sedd_dit"
    model = (load_sedd_checkpoint if sedd else load_mdlm_checkpoint)(checkpoint, config)
    return save_pretrained(
        model, Path(out_dir) / "model", config={"family": preset.family, "model": config.to_dict()}
    )


def load_converted(folder: str | os.PathLike, *, device: str | torch.device = "cpu") -> MDLMDiT:
    """A converted MDLM / SEDD preset folder -> model in float32 eval mode."""
    return from_pretrained(folder, device=device, dtype=torch.float32).eval()
