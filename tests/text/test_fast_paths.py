"""The masked diffusion LM's graphed denoiser passes sample the eager tokens (CPU fallback and GPU graphs)."""

from __future__ import annotations

import pytest
import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.text.mdlm import MaskedDiffusionLM, MDLMConfig


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_mdlm_graphed_sampling_gives_the_eager_tokens(device: str) -> None:
    torch.manual_seed(0)
    model = MaskedDiffusionLM(MDLMConfig(vocab_size=40, dim=32, n_layers=2, n_heads=4, max_seq_len=24))
    model = model.to(device).eval()
    for batch, length in ((3, 24), (2, 16), (3, 24)):
        kwargs = dict(steps=12, params=SamplingParams(top_k=10), device=device)
        eager = model.sample(batch, length, generator=torch.Generator(device).manual_seed(length), **kwargs)
        fast = model.sample(
            batch, length, generator=torch.Generator(device).manual_seed(length), graphed=True, **kwargs
        )
        assert torch.equal(fast.tokens, eager.tokens)
        assert fast.num_model_calls == eager.num_model_calls
        assert not (fast.tokens == model.config.mask_id).any()
    if device == "cuda":
        assert len(model._graphs) == 2  # one capture per shape, reused by the third call
