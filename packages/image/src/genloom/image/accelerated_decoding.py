"""Training-free faster decoding of the raster AR model with core's (speculative) Jacobi decoding.

Core's `jacobi_generate` / `speculative_jacobi_generate` drive any `CachedLM` (token ids in, logits out, a
truncatable KV cache). `ClassPrefixLM` (the adapter `RasterAR.generate` also samples through) presents a
`RasterAR` that way: ids >= vocab_size stand for the class prefix, so the class is the prompt. Greedy
Jacobi returns exactly the tokens of greedy decoding; SJD samples from the same distribution as plain
sampling, in fewer passes.
CFG is not part of core's Jacobi loop, so these paths run unguided. ZipAR (parallel rows, with CFG) lives
in `genloom.image.zipar` and is re-exported here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genloom.core.sampling.autoregressive import DecodeStats
from genloom.core.sampling.jacobi import jacobi_generate, speculative_jacobi_generate
from genloom.core.sampling.logits import SamplingParams
from genloom.image.models.class_prefix import ClassPrefixLM
from genloom.image.models.raster_ar import RasterAR
from genloom.image.zipar import zipar_sample

__all__ = ["ClassPrefixLM", "jacobi_sample", "zipar_sample"]


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
    lm = ClassPrefixLM(model)
    prompt = lm.class_prompt(labels)
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
        lm.remove_cache()
    return tokens, stats
