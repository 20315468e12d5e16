"""`TransformerConfig`: the one JSON-serialisable description of every genloom transformer.

A model is configured, not copied: the same blocks express LlamaGen (RMSNorm, SwiGLU, fused bias-free qkv,
2D interleaved RoPE with a zero-rotation class prefix), VAR (AdaLN with its own chunk order, cosine attention
with a learned per-head scale, q/v-only qkv bias, block-causal mask over scales) and MAR (timm ViT blocks:
LayerNorm eps 1e-6, exact-GELU MLP, biased qkv). `validate()` runs in `__post_init__`, so an inconsistent
config fails at construction with a message that names the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from genloom.core.errors import ConfigError, check_field_names

__all__ = ["TransformerConfig", "DIT_ADALN_CHUNKS", "VAR_ADALN_CHUNKS"]

#: Order of the six modulation vectors in DiT / most AdaLN-zero code: `Linear(cond) -> 6*dim`, chunked.
DIT_ADALN_CHUNKS: tuple[str, ...] = (
    "shift_attn",
    "scale_attn",
    "gate_attn",
    "shift_mlp",
    "scale_mlp",
    "gate_mlp",
)
#: VAR's order (`gamma1, gamma2, scale1, scale2, shift1, shift2` in models/basic_var.py).
VAR_ADALN_CHUNKS: tuple[str, ...] = (
    "gate_attn",
    "gate_mlp",
    "scale_attn",
    "scale_mlp",
    "shift_attn",
    "shift_mlp",
)

_CHOICES: dict[str, tuple[Any, ...]] = {
    "mlp": ("swiglu", "gelu", "gelu_tanh"),
    "norm": ("rmsnorm", "layernorm"),
    "qk_norm": ("none", "rmsnorm", "layernorm", "l2"),
    "qkv_bias": ("none", "qkv", "qv"),
    "rope": ("none", "1d", "2d", "3d"),
    "rope_layout": ("interleaved", "half"),
    "rope_prefix_rotation": ("zero", "identity"),
    "adaln": ("none", "adaln", "adaln_zero"),
    "mask": ("causal", "bidirectional", "block_causal", "prefix"),
    "attn_impl": ("sdpa", "flex"),
}


@dataclass
class TransformerConfig:
    """Architecture of a pre-norm transformer stack (decoder-only, encoder, or the decoder of a seq2seq).

    Sizes: `dim` model width, `n_heads` query heads, `n_kv_heads` key/value heads (None = n_heads; fewer =
    GQA), `head_dim` (None = dim // n_heads). `vocab_size` None means no token embedding and no output head
    (the caller feeds `embeddings=` and reads `features()`); `embed_tokens=False` keeps the head only.
    """

    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    max_seq_len: int = 2048
    # --- MLP: hidden = mlp_hidden_dim, or int(mlp_ratio*dim) (x 2/3 for SwiGLU) rounded up to mlp_multiple_of
    mlp: str = "swiglu"
    mlp_hidden_dim: int | None = None
    mlp_ratio: float = 4.0
    mlp_multiple_of: int = 1
    mlp_bias: bool = False
    # --- norms
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    norm_affine: bool = True
    # --- attention
    fused_qkv: bool = True  # one `wqkv` Linear ([q; k; v] rows) or separate `wq`, `wk`, `wv`
    qkv_bias: str = "none"  # "qv": learned q and v biases, k bias fixed at zero (VAR, BEiT)
    attn_out_bias: bool = False
    qk_norm: str = "none"  # "l2": cosine attention with a learned per-head log-scale (VAR, Swin v2)
    attn_scale: float | None = None  # softmax scale; None = 1/sqrt(head_dim) (1.0 with qk_norm="l2")
    attn_impl: str = "sdpa"  # "flex": FlexAttention for uncached forwards with structured masks
    mask: str = "causal"
    block_sizes: list[int] | None = None  # for mask="block_causal": tokens per block, in order
    prefix_len: int = 0  # for mask="prefix": bidirectional prefix length (prefix-LM)
    # --- positions
    rope: str = "none"
    rope_layout: str = "interleaved"  # pairs (2i, 2i+1), or "half": pairs (i, i + head_dim/2)
    rope_theta: float = 10000.0
    rope_grid: list[int] | None = None  # [H, W] for "2d", [T, H, W] for "3d"
    rope_axis_dims: list[int] | None = None  # head dims given to each axis (None = even split)
    rope_prefix: int = 0  # tokens before the grid (class token, prompt) with their own rotation
    rope_prefix_rotation: str = "zero"  # "zero": q = k = 0 (LlamaGen's class token); "identity": unrotated
    learned_pos: bool = False  # a learned absolute position table `pos_embedding` [max_seq_len, dim]
    # --- regularisation
    dropout: float = 0.0  # residual-branch dropout (after attention / MLP output projections)
    attn_dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth, rising linearly from 0 (first block) to this (last)
    # --- conditioning
    adaln: str = "none"
    cond_dim: int | None = None  # width of the AdaLN condition (None = dim)
    adaln_chunks: list[str] = field(default_factory=lambda: list(DIT_ADALN_CHUNKS))
    final_adaln: bool | None = None  # adaptive final norm (None = same as adaln != "none")
    final_adaln_chunks: list[str] = field(default_factory=lambda: ["shift", "scale"])
    cross_attn: bool = False
    context_dim: int | None = None  # width of the cross-attention context (None = dim)
    # --- input embedding / output head
    embed_tokens: bool = True  # False: no `tok_embeddings` even with a vocab head (continuous inputs, VAR)
    output_bias: bool = False
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in ("block_sizes", "rope_grid", "rope_axis_dims", "adaln_chunks", "final_adaln_chunks"):
            value = getattr(self, name)
            if isinstance(value, tuple):
                setattr(self, name, list(value))
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads if self.head_dim is None else self.head_dim

    @property
    def cond_size(self) -> int:
        return self.dim if self.cond_dim is None else self.cond_dim

    @property
    def context_size(self) -> int:
        return self.dim if self.context_dim is None else self.context_dim

    @property
    def mlp_hidden(self) -> int:
        if self.mlp_hidden_dim is not None:
            return self.mlp_hidden_dim
        hidden = int(self.mlp_ratio * self.dim)
        if self.mlp == "swiglu":
            hidden = int(2 * hidden / 3)
        return self.mlp_multiple_of * math.ceil(hidden / self.mlp_multiple_of)

    @property
    def use_final_adaln(self) -> bool:
        return self.adaln != "none" if self.final_adaln is None else self.final_adaln

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"TransformerConfig.{name} must be one of {choices}, got {getattr(self, name)!r}"
                )
        for name in ("dim", "n_layers", "n_heads", "max_seq_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(
                    f"TransformerConfig.{name} must be a positive int, got {getattr(self, name)!r}"
                )
        if self.head_dim is None and self.dim % self.n_heads:
            raise ConfigError(
                f"dim={self.dim} is not divisible by n_heads={self.n_heads}; set head_dim explicitly"
            )
        if self.kv_heads < 1 or self.n_heads % self.kv_heads:
            raise ConfigError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.kv_heads}")
        if self.rope != "none" and self.head_size % 2:
            raise ConfigError(f"RoPE needs an even head_dim, got {self.head_size}")
        if self.rope in ("2d", "3d"):
            n_axes = 2 if self.rope == "2d" else 3
            if self.rope_grid is None or len(self.rope_grid) != n_axes or min(self.rope_grid) < 1:
                raise ConfigError(
                    f"rope={self.rope!r} needs rope_grid with {n_axes} positive sizes, got {self.rope_grid}"
                )
        if self.rope_prefix < 0 or (self.rope == "1d" and self.rope_prefix >= self.max_seq_len):
            raise ConfigError(
                f"rope_prefix must be in [0, max_seq_len={self.max_seq_len}), got {self.rope_prefix}"
            )
        if self.rope_axis_dims is not None:
            if sum(self.rope_axis_dims) != self.head_size or any(d % 2 or d < 0 for d in self.rope_axis_dims):
                raise ConfigError(
                    f"rope_axis_dims must be even and sum to head_dim={self.head_size}, got {self.rope_axis_dims}"
                )
        if self.mask == "block_causal":
            if not self.block_sizes or min(self.block_sizes) < 1:
                raise ConfigError(f"mask='block_causal' needs positive block_sizes, got {self.block_sizes}")
        if self.mask == "prefix" and self.prefix_len < 0:
            raise ConfigError(f"prefix_len must be >= 0, got {self.prefix_len}")
        if sorted(self.adaln_chunks) != sorted(DIT_ADALN_CHUNKS):
            raise ConfigError(
                f"adaln_chunks must be a permutation of {DIT_ADALN_CHUNKS}, got {self.adaln_chunks}"
            )
        if sorted(self.final_adaln_chunks) != ["scale", "shift"]:
            raise ConfigError(
                f"final_adaln_chunks must be a permutation of ['shift', 'scale'], got {self.final_adaln_chunks}"
            )
        if self.use_final_adaln and self.adaln == "none" and self.cond_dim is None:
            raise ConfigError("final_adaln=True without adaln needs cond_dim")
        if self.tie_embeddings and (self.vocab_size is None or not self.embed_tokens):
            raise ConfigError("tie_embeddings=True needs vocab_size and embed_tokens=True")
        for name in ("dropout", "attn_dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"TransformerConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.mlp_multiple_of < 1:
            raise ConfigError(f"mlp_multiple_of must be >= 1, got {self.mlp_multiple_of}")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"TransformerConfig.from_dict expects a dict, got {type(data).__name__}")
        check_field_names(cls, data)
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TransformerConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"TransformerConfig JSON is malformed: {error}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> TransformerConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
