"""The one transformer recipe every text model shares: GPT-2 / BART style (LayerNorm, GELU MLP, learned
absolute positions) on `genloom.core.nn.Transformer`.

The causal LM, the masked diffusion LM and the seq2seq encoder / decoders differ only in their sizes,
attention mask and a few extras (cross-attention, tied embeddings), so they all build their config here.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from genloom.core.nn import Transformer, TransformerConfig


class LMSizes(Protocol):
    """The size fields a single-stack text LM config carries (CausalLMConfig, MDLMConfig)."""

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    max_seq_len: int
    dropout: float


def text_transformer_config(**fields: Any) -> TransformerConfig:
    """TransformerConfig with the text recipe (LayerNorm, GELU MLP, learned positions) plus `fields`."""
    return TransformerConfig(mlp="gelu", norm="layernorm", learned_pos=True, **fields)


def lm_backbone(sizes: LMSizes, *, mask: Literal["causal", "bidirectional"]) -> Transformer:
    """A single-stack text transformer of the given sizes: causal for AR, bidirectional for diffusion."""
    return Transformer(
        text_transformer_config(
            dim=sizes.dim,
            n_layers=sizes.n_layers,
            n_heads=sizes.n_heads,
            vocab_size=sizes.vocab_size,
            max_seq_len=sizes.max_seq_len,
            mask=mask,
            dropout=sizes.dropout,
        )
    )
