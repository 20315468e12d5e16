"""Training-free faster decoding of the raster AR model with core's (speculative) Jacobi decoding.

Core's `jacobi_generate` / `speculative_jacobi_generate` drive any `CachedLM` (token ids in, logits out, a
truncatable KV cache). `ClassPrefixLM` presents a `RasterAR` that way: ids >= vocab_size stand for the class
prefix (id = vocab_size + class), so the class is the one-token prompt. Greedy Jacobi returns exactly the
tokens of greedy decoding; SJD samples from the same distribution as plain sampling, in fewer passes.
CFG is not part of core's Jacobi loop, so these paths run unguided.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genloom.core.sampling.autoregressive import DecodeStats
from genloom.core.sampling.jacobi import jacobi_generate, speculative_jacobi_generate
from genloom.core.sampling.logits import SamplingParams
from genloom.image.models.raster_ar import RasterAR


class ClassPrefixLM:
    """CachedLM view of a RasterAR with cls_token_num == 1: class ids live above the token vocabulary."""

    def __init__(self, model: RasterAR) -> None:
        if model.config.cls_token_num != 1:
            raise ValueError(f"ClassPrefixLM needs cls_token_num == 1, got {model.config.cls_token_num}")
        self.model = model
        self.vocab_size = model.vocab_size

    @property
    def config(self):  # noqa: ANN201 - core's check_prompt reads config.max_seq_len
        return self.model.transformer.config

    def setup_cache(self, batch_size: int, max_seq_len: int) -> None:
        self.model.transformer.setup_cache(batch_size, max_seq_len)

    def truncate_cache(self, length: int) -> None:
        self.model.transformer.truncate_cache(length)

    def __call__(self, tokens: Tensor, *, input_pos: Tensor) -> Tensor:
        is_class = tokens >= self.vocab_size
        token_emb = self.model.transformer.embed(tokens.clamp_max(self.vocab_size - 1))
        class_emb = self.model.cls_embedding(
            torch.where(is_class, tokens - self.vocab_size, 0).flatten()
        ).view_as(token_emb)
        x = torch.where(is_class.unsqueeze(-1), class_emb, token_emb)
        return self.model.transformer(embeddings=x, input_pos=input_pos)


@torch.no_grad()
def jacobi_sample(
    model: RasterAR,
    labels: Tensor,
    *,
    window: int = 8,
    sampling: SamplingParams | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, DecodeStats]:
    """Token grids (B, h*w) by greedy Jacobi (temperature 0) or speculative Jacobi decoding, with the pass count."""
    labels = model.cls_embedding.check(labels)
    lm = ClassPrefixLM(model)
    prompt = (labels + lm.vocab_size).view(-1, 1)
    stats = DecodeStats()
    sampling = sampling or SamplingParams()
    try:
        if sampling.temperature == 0:
            tokens = jacobi_generate(lm, prompt, model.num_tokens, window=window, stats=stats)
        else:
            tokens = speculative_jacobi_generate(
                lm, prompt, model.num_tokens, window=window, params=sampling, generator=generator, stats=stats
            )
    finally:
        model.transformer.remove_cache()
    return tokens, stats
