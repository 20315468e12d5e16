"""LLaDA (Nie et al. 2025) on the core transformer, loaded offline from its public safetensors.

LLaDA-8B is a bidirectional Llama-style mask predictor: RMSNorm, separate q / k / v projections without
bias, rotate-half RoPE (theta 500,000), SwiGLU with `ff_proj` as the gate and `up_proj` as the up
projection, an untied output layer. Its Hugging Face folder holds `config.json` (OLMo-style field names)
and sharded `model-*.safetensors` with a `model.safetensors.index.json`; `load_llada(folder)` reads both,
maps `model.transformer.*` names onto `genloom.core.nn.Transformer`, and builds the model on the meta
device first so that an 8B checkpoint is held in memory once. Generation uses the core LLaDA
`block_decode` (semi-autoregressive blocks, low-confidence remasking).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn

from genloom.core.nn import Transformer, TransformerConfig
from genloom.core.nn.rope import rope_1d
from genloom.core.sampling.discrete_diffusion import block_decode
from genloom.text.errors import TextInputError

__all__ = ["LLADA_8B", "LLaDA", "LLaDAConfig", "llada_key_map", "load_llada"]

# Hugging Face config.json fields that change the architecture and that this port supports at one value
_FIXED_HF_FIELDS = {
    "include_bias": False,
    "weight_tying": False,
    "block_type": "llama",
    "layer_norm_type": "rms",
    "activation_type": "silu",
    "alibi": False,
    "input_emb_norm": False,
    "scale_logits": False,
    "block_group_size": 1,
}


@dataclass
class LLaDAConfig:
    """Sizes of a LLaDA model (names follow its Hugging Face config.json)."""

    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int = 32
    n_layers: int = 32
    mlp_hidden_size: int = 12288
    vocab_size: int = 126464  # the embedding size (rows of wte and of the output layer)
    mask_token_id: int = 126336
    max_sequence_length: int = 4096
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise TextInputError(
                f"d_model {self.d_model} must divide into n_heads {self.n_heads}, and those into n_kv_heads "
                f"{self.n_kv_heads}"
            )
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise TextInputError(f"mask_token_id {self.mask_token_id} must lie in [0, {self.vocab_size})")

    @classmethod
    def from_hf_config(cls, data: dict[str, Any]) -> LLaDAConfig:
        """Read an official config.json; refuse variants this port does not implement (names the field)."""
        for name, expected in _FIXED_HF_FIELDS.items():
            if name in data and data[name] != expected:
                raise TextInputError(
                    f"LLaDA config field {name}={data[name]!r} is not supported (expected {expected!r})"
                )
        if data.get("rope") is False:
            raise TextInputError("LLaDA config without RoPE is not supported")
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["vocab_size"] = data.get("embedding_size") or data.get("vocab_size", cls.vocab_size)
        if data.get("n_kv_heads") is None:
            values["n_kv_heads"] = data.get("n_heads", cls.n_heads)
        return cls(**values)

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(
            dim=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            vocab_size=self.vocab_size,
            max_seq_len=self.max_sequence_length,
            mlp="swiglu",
            mlp_hidden_dim=self.mlp_hidden_size,
            norm="rmsnorm",
            norm_eps=self.rms_norm_eps,
            fused_qkv=False,
            mask="bidirectional",
            rope="1d",
            rope_layout="half",
            rope_theta=self.rope_theta,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


LLADA_8B = LLaDAConfig()

_BLOCK_NAMES = {
    "attn_norm.weight": "attn_norm.weight",
    "q_proj.weight": "attn.wq.weight",
    "k_proj.weight": "attn.wk.weight",
    "v_proj.weight": "attn.wv.weight",
    "attn_out.weight": "attn.wo.weight",
    "ff_norm.weight": "mlp_norm.weight",
    "ff_proj.weight": "mlp.w1.weight",  # gate (SiLU applied)
    "up_proj.weight": "mlp.w3.weight",
    "ff_out.weight": "mlp.w2.weight",
}
_TOP_NAMES = {
    "model.transformer.wte.weight": "tok_embeddings.weight",
    "model.transformer.ln_f.weight": "norm.weight",
    "model.transformer.ff_out.weight": "output.weight",
}
_BLOCK_KEY = re.compile(r"model\.transformer\.blocks\.(\d+)\.(.+)")


def llada_key_map(name: str) -> str:
    """Official tensor name -> name inside `LLaDA.backbone`; unknown names are an error."""
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    match = _BLOCK_KEY.fullmatch(name)
    if match and match.group(2) in _BLOCK_NAMES:
        return f"layers.{match.group(1)}.{_BLOCK_NAMES[match.group(2)]}"
    raise TextInputError(f"unexpected tensor {name!r} in a LLaDA checkpoint")


class LLaDA(nn.Module):
    """Bidirectional mask predictor: tokens -> float32 logits [B, L, V]."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Transformer(config.transformer_config())

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.shape[1] > self.config.max_sequence_length:
            raise TextInputError(
                f"expected tokens [B, <= {self.config.max_sequence_length}], got {tuple(tokens.shape)}"
            )
        return self.backbone(tokens)

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        length: int,
        *,
        steps: int = 64,
        block_length: int = 32,
        remasking: str = "low_confidence",
    ) -> Tensor:
        """LLaDA semi-autoregressive decoding of `length` tokens after `prompt` [B, P]: [B, P + length]."""
        masks = torch.full(
            (prompt.shape[0], length), self.config.mask_token_id, dtype=torch.long, device=prompt.device
        )
        return block_decode(
            self,
            torch.cat([prompt, masks], dim=1),
            mask_token_id=self.config.mask_token_id,
            num_steps=steps,
            block_length=block_length,
            prompt_length=prompt.shape[1],
            remasking=remasking,
        )


def _shard_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise TextInputError(f"{folder} has neither model.safetensors.index.json nor model.safetensors")


def load_llada(
    folder: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> LLaDA:
    """A LLaDA model from a local Hugging Face folder (config.json + safetensors), in eval mode.

    Tensors keep the checkpoint's dtype unless `dtype` is given; a missing, unexpected or mis-shaped
    tensor is an error that names it."""
    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise TextInputError(f"{folder} has no config.json (expected a LLaDA Hugging Face folder)")
    config = LLaDAConfig.from_hf_config(json.loads((folder / "config.json").read_text()))
    with torch.device("meta"):
        model = LLaDA(config)
    expected = {k: v.shape for k, v in model.backbone.state_dict().items()}
    state: dict[str, Tensor] = {}
    for shard in _shard_files(folder):
        if not shard.is_file():
            raise TextInputError(f"LLaDA shard {shard} is missing")
        with safe_open(str(shard), framework="pt", device=str(device)) as handle:
            for name in handle.keys():
                ours = llada_key_map(name)
                tensor = handle.get_tensor(name)
                if tuple(tensor.shape) != tuple(expected[ours]):
                    raise TextInputError(
                        f"{name}: shape {tuple(tensor.shape)} does not match the config's {tuple(expected[ours])}"
                    )
                state[ours] = tensor.to(dtype) if dtype is not None else tensor
    missing = sorted(set(expected) - set(state))
    if missing:
        raise TextInputError(f"LLaDA checkpoint lacks {len(missing)} tensor(s), e.g. {missing[:3]}")
    model.backbone.load_state_dict(state, strict=True, assign=True)
    head_dim = config.d_model // config.n_heads
    cos, sin = rope_1d(config.max_sequence_length, head_dim, theta=config.rope_theta)
    model.backbone.set_rope_tables(cos.to(device), sin.to(device))
    return model.eval()
