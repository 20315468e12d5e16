"""`Encoder` (bidirectional stack returning hidden states) and `EncoderDecoder` (seq2seq: the decoder is a
cached `Transformer` whose cross-attention keys/values over the encoder output are computed once).

Weight names: `encoder.*` and `decoder.*`, each laid out as in `transformer.py`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from genloom.core.errors import ConfigError

from .config import TransformerConfig
from .transformer import Transformer

__all__ = ["Encoder", "EncoderDecoder"]


class Encoder(Transformer):
    """Bidirectional stack that returns final-norm hidden states [B, L, dim] (it has no vocab head; a
    config with mask="causal" is switched to "bidirectional")."""

    def __init__(self, config: TransformerConfig) -> None:
        if config.mask == "causal":
            config = config.replace(mask="bidirectional")
        super().__init__(config)
        self.output = None  # an encoder yields hidden states; a vocab_size only sizes its token embedding

    def setup_cache(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        raise ConfigError("an Encoder is not decoded step by step; it has no KV cache")

    def forward(
        self,
        tokens: Tensor | None = None,
        *,
        embeddings: Tensor | None = None,
        padding_mask: Tensor | None = None,
        cond: Tensor | None = None,
        input_pos: Tensor | None = None,
    ) -> Tensor:
        """tokens [B, L] (or embeddings) -> hidden [B, L, dim]; padding_mask [B, L] True = real token."""
        return self.features(
            tokens, embeddings=embeddings, key_padding_mask=padding_mask, cond=cond, input_pos=input_pos
        )


class EncoderDecoder(nn.Module):
    """Seq2seq: `Encoder` over the source, `Transformer` decoder with cross-attention over its output.

    Teacher forcing: `forward(src, tgt)`. Cached decoding: `start_decoding(src)` encodes once and caches
    every decoder layer's cross-attention keys/values; then `model.decoder` satisfies the AR protocol
    (`setup_cache`, `forward(tokens, input_pos=...)`, `truncate_cache`) for the samplers.
    """

    def __init__(self, encoder: TransformerConfig, decoder: TransformerConfig) -> None:
        super().__init__()
        if not decoder.cross_attn:
            raise ConfigError("the decoder config of an EncoderDecoder needs cross_attn=True")
        if decoder.context_size != encoder.dim:
            raise ConfigError(
                f"decoder context_dim {decoder.context_size} must equal the encoder dim {encoder.dim}"
            )
        if decoder.vocab_size is None:
            raise ConfigError("the decoder config of an EncoderDecoder needs vocab_size")
        self.encoder = Encoder(encoder)
        self.decoder = Transformer(decoder)

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.config.to_dict(), "decoder": self.decoder.config.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderDecoder:
        if not isinstance(data, dict) or set(data) != {"encoder", "decoder"}:
            raise ConfigError(
                "an EncoderDecoder config is a dict with exactly the keys 'encoder' and 'decoder'"
            )
        return cls(TransformerConfig.from_dict(data["encoder"]), TransformerConfig.from_dict(data["decoder"]))

    def encode(
        self,
        src: Tensor | None = None,
        *,
        src_embeddings: Tensor | None = None,
        src_padding_mask: Tensor | None = None,
    ) -> Tensor:
        return self.encoder(src, embeddings=src_embeddings, padding_mask=src_padding_mask)

    def forward(
        self,
        src: Tensor | None = None,
        tgt: Tensor | None = None,
        *,
        src_embeddings: Tensor | None = None,
        tgt_embeddings: Tensor | None = None,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher forcing: logits [B, Lt, vocab] of the decoder over target inputs `tgt` given `src`."""
        memory = self.encode(src, src_embeddings=src_embeddings, src_padding_mask=src_padding_mask)
        return self.decoder(
            tgt,
            embeddings=tgt_embeddings,
            key_padding_mask=tgt_padding_mask,
            context=memory,
            context_mask=src_padding_mask,
        )

    def start_decoding(
        self,
        src: Tensor | None = None,
        *,
        src_embeddings: Tensor | None = None,
        src_padding_mask: Tensor | None = None,
    ) -> Transformer:
        """Encode `src` once, cache the decoder's cross-attention keys/values, return the decoder."""
        memory = self.encode(src, src_embeddings=src_embeddings, src_padding_mask=src_padding_mask)
        self.decoder.set_context(memory, src_padding_mask)
        return self.decoder

    def reorder_cache(self, indices: Tensor) -> None:
        """Beam search on the decoder returned by `start_decoding`: gather its self-attention caches and its
        per-row cross-attention keys/values along the batch (`Transformer.reorder_cache`)."""
        self.decoder.reorder_cache(indices)
