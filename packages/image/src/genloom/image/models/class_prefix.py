"""`ClassPrefixLM`: a class-conditional `RasterAR` seen as core's `CachedLM` (token ids in, logits out).

Core's AR samplers (`generate`, Jacobi and speculative Jacobi decoding) take token prompts only. Here ids
at or above the token vocabulary stand for a class (id = vocab_size + class, the null class included), so a
class prefix is an ordinary prompt: `cls_token_num` copies of the class id, each embedded by the class
table exactly as LlamaGen's prefix is. One adapter, so every AR loop over image tokens is core's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from genloom.core.nn import TransformerConfig

if TYPE_CHECKING:
    from genloom.image.models.raster_ar import RasterAR


class ClassPrefixLM:
    """CachedLM view of a `RasterAR`: class ids live above the token vocabulary (`vocab_size + class`)."""

    def __init__(self, model: RasterAR) -> None:
        self.model = model
        self.vocab_size = model.vocab_size
        self.prefix_len = model.config.cls_token_num

    @property
    def config(self) -> TransformerConfig:
        """The transformer's config (core's samplers read `max_seq_len`)."""
        return self.model.transformer.config

    def class_prompt(self, labels: Tensor) -> Tensor:
        """Prompt ids (B, cls_token_num) of class `labels` (B,) (the null class allowed)."""
        labels = self.model.cls_embedding.check(labels).to(
            self.model.cls_embedding.embedding_table.weight.device
        )
        return (labels + self.vocab_size).view(-1, 1).expand(-1, self.prefix_len).contiguous()

    @property
    def decode_module(self) -> torch.nn.Module:
        """What one-token decoding steps call (image tokens only): the transformer itself, whose forward
        traces into a compiled step (this adapter's class-id check does not)."""
        return self.model.transformer

    def setup_cache(self, batch_size: int, max_seq_len: int, *, static: bool | None = None) -> None:
        self.model.transformer.setup_cache(batch_size, max_seq_len, static=static)

    def truncate_cache(self, length: int) -> None:
        self.model.transformer.truncate_cache(length)

    def remove_cache(self) -> None:
        self.model.transformer.remove_cache()

    def prompt_embeddings(self, tokens: Tensor) -> Tensor:
        """Ids [B, T] (tokens and class ids) -> the transformer's input embeddings [B, T, dim]: class ids
        through the class table, tokens through the token table (core's `CompiledDecoder` feeds a one-token
        class prompt this way as its first compiled step)."""
        is_class = tokens >= self.vocab_size
        token_emb = self.model.transformer.embed(tokens.clamp_max(self.vocab_size - 1))
        class_emb = self.model.cls_embedding(torch.where(is_class, tokens - self.vocab_size, 0).flatten())
        return torch.where(is_class.unsqueeze(-1), class_emb.view_as(token_emb), token_emb)

    def __call__(self, tokens: Tensor, *, input_pos: Tensor) -> Tensor:
        if not bool((tokens >= self.vocab_size).any()):  # the decoding steps: image tokens only
            return self.model.transformer(tokens, input_pos=input_pos)
        return self.model.transformer(embeddings=self.prompt_embeddings(tokens), input_pos=input_pos)
