"""On a CUDA device the per-step sampler paths run without a single host synchronisation
(`torch.cuda.set_sync_debug_mode("error")` turns any sync into an exception) and match their CPU results."""

from __future__ import annotations

import contextlib

import pytest
import torch

from genloom.core.sampling import (
    DDIMSampler,
    DDPMSampler,
    FlowMatchSampler,
    MaskedDiffusionSampler,
    MaskedSampler,
    SamplingParams,
    apply_guidance,
    process_logits,
    sample_from_logits,
)

pytestmark = pytest.mark.gpu


@contextlib.contextmanager
def no_host_sync():
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@pytest.fixture
def cuda() -> torch.device:
    return torch.device("cuda")


def test_logit_processing_and_sampling_do_not_sync(cuda) -> None:
    logits = torch.randn(8, 32000, device=cuda, dtype=torch.bfloat16)
    logits32 = torch.randn(8, 32000, device=cuda) * 3  # float32: no ties, so CPU and GPU keep the same set
    g = torch.Generator(device=cuda).manual_seed(0)
    params = [
        SamplingParams(),
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.7, top_k=50, top_p=0.9),
        SamplingParams(top_p=0.95, min_p=0.05, typical_p=0.9),
    ]
    with no_host_sync():
        outs = [sample_from_logits(logits, p, g) for p in params]
        filtered = process_logits(logits32, SamplingParams(top_k=50, top_p=0.9))
    assert all(o.shape == (8,) and o.device.type == "cuda" for o in outs)
    cpu = process_logits(logits32.cpu(), SamplingParams(top_k=50, top_p=0.9))
    assert torch.equal(torch.isfinite(filtered).cpu(), torch.isfinite(cpu))


def test_masked_and_discrete_diffusion_steps_do_not_sync(cuda) -> None:
    mask, vocab = 100, 101
    tokens = torch.full((4, 64), mask, device=cuda)
    logits = torch.randn(4, 64, vocab, device=cuda)
    g = torch.Generator(device=cuda).manual_seed(0)
    sampler = MaskedSampler(mask_token_id=mask)
    sampler.set_steps(8)
    diffusion = MaskedDiffusionSampler(mask_token_id=mask)
    diffusion.set_steps(16)
    n0 = torch.full((4,), 64, device=cuda)
    with no_host_sync():
        out = sampler.step(
            logits, tokens, 0, num_initial_masked=n0, params=SamplingParams(top_k=20), generator=g
        )
        stepped = diffusion.step(logits, tokens, 0, generator=g)
        guided = apply_guidance(logits, logits.flip(0), 3.0)
    assert int((out.tokens == mask).sum(-1)[0]) == sampler.mask_counts(n0.cpu())[0, 0]
    assert stepped.shape == tokens.shape and guided.shape == logits.shape


def test_continuous_steps_do_not_sync_and_match_cpu(cuda) -> None:
    x = torch.randn(16, 8, device=cuda)
    eps = torch.randn(16, 8, device=cuda)
    g = torch.Generator(device=cuda).manual_seed(0)
    ddpm, ddim, flow = DDPMSampler(beta_schedule="cosine"), DDIMSampler(), FlowMatchSampler(method="heun")
    ddpm.set_steps(100)
    ddim.set_steps(50)
    flow.set_steps(10)
    with no_host_sync():
        a = ddpm.step(eps, 3, x, generator=g)
        b = ddim.step(eps, 3, x)
        c = flow.step(eps, 3, x, velocity_fn=lambda y, t: -y)
    torch.testing.assert_close(a.mean.cpu(), ddpm.step(eps.cpu(), 3, x.cpu()).mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        b.prev_sample.cpu(), ddim.step(eps.cpu(), 3, x.cpu()).prev_sample, atol=1e-5, rtol=1e-5
    )
    assert c.shape == x.shape
