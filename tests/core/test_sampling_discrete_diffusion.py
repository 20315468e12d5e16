"""Absorbing-state diffusion: exact-posterior sampling matches the marginals, the cache skips model calls,
the ELBO of a perfect model equals the true NLL, LLaDA block decoding commits blocks left to right."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from genloom.core.sampling.discrete_diffusion import (
    LogLinearNoise,
    MaskedDiffusionSampler,
    block_decode,
    forward_mask,
    masked_diffusion_loss,
    sample_times,
)
from genloom.core.sampling.errors import SamplingError
from genloom.core.sampling.logits import SamplingParams

CHI2_P001 = {3: 16.27, 4: 18.47}  # chi-square critical values at p = 0.001


def _independent_model(marginals: torch.Tensor, mask_id: int, calls: list[int]):
    """Exact posterior of independent tokens: p(x0_i | x_t) is the marginal of position i."""
    log_marginals = torch.cat([marginals.log(), torch.full((marginals.shape[0], 1), -30.0)], dim=-1)
    assert log_marginals.shape[-1] == mask_id + 1

    def forward(tokens: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return log_marginals.expand(tokens.shape[0], -1, -1)

    return forward


def _chi2(samples: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(samples, minlength=probs.numel()).double()
    expected = probs.double() * samples.numel()
    return ((counts - expected) ** 2 / expected).sum().item()


@pytest.mark.parametrize("num_steps", [4, 64])
def test_sampler_with_exact_posterior_matches_marginals(num_steps: int) -> None:
    marginals = torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.1, 0.1, 0.3, 0.5], [0.25, 0.25, 0.25, 0.25]])
    mask_id = 4
    calls: list[int] = []
    sampler = MaskedDiffusionSampler(mask_token_id=mask_id)
    sampler.set_steps(num_steps)
    start = torch.full((3000, 3), mask_id)
    out = sampler.sample(
        _independent_model(marginals, mask_id, calls), start, generator=torch.Generator().manual_seed(0)
    )
    assert not (out.tokens == mask_id).any()
    for pos in range(3):
        assert _chi2(out.tokens[:, pos], marginals[pos]) < CHI2_P001[3]
    assert out.num_model_calls == len(calls) <= num_steps


def test_step_by_step_ancestral_sampler_matches_marginals() -> None:
    marginals = torch.tensor([[0.6, 0.1, 0.1, 0.2], [0.05, 0.15, 0.3, 0.5]])
    mask_id = 4
    sampler = MaskedDiffusionSampler(mask_token_id=mask_id)
    sampler.set_steps(5)
    model = _independent_model(marginals, mask_id, [])
    g = torch.Generator().manual_seed(1)
    tokens = torch.full((3000, 2), mask_id)
    masked_counts = []
    for k in range(5):
        tokens = sampler.step(model(tokens), tokens, k, generator=g)
        masked_counts.append((tokens == mask_id).float().mean().item())
    # alpha_t = 1 - t: after step k a fraction t_{k+1} = 1 - (k + 1) / 5 is still masked
    np.testing.assert_allclose(masked_counts, [0.8, 0.6, 0.4, 0.2, 0.0], atol=0.02)
    for pos in range(2):
        assert _chi2(tokens[:, pos], marginals[pos]) < CHI2_P001[3]


def test_cache_skips_model_calls_when_steps_exceed_length() -> None:
    mask_id = 4
    calls: list[int] = []
    sampler = MaskedDiffusionSampler(mask_token_id=mask_id)
    sampler.set_steps(512)
    tokens = torch.full((2, 8), mask_id)
    tokens[0, :3] = 0  # a prompt already revealed in row 0
    model = _independent_model(torch.full((8, 4), 0.25), mask_id, calls)
    out = sampler.sample(model, tokens, generator=torch.Generator().manual_seed(3))
    assert len(calls) == out.num_model_calls <= 5 + 8 < 512
    assert torch.equal(out.tokens[0, :3], torch.zeros(3, dtype=torch.long))
    assert not (out.tokens == mask_id).any()


def _joint_distribution() -> dict[tuple[int, ...], float]:
    g = torch.Generator().manual_seed(5)
    weights = torch.rand(8, generator=g, dtype=torch.float64) + 0.1
    weights = weights / weights.sum()
    return {x: weights[i].item() for i, x in enumerate(itertools.product((0, 1), repeat=3))}


def _perfect_logits(xt: tuple[int, ...], joint: dict, mask_id: int) -> torch.Tensor:
    """log p(x0_i = v | visible tokens of xt), by enumeration, at every position."""
    logits = torch.zeros(3, 3, dtype=torch.float64)
    consistent = {x: p for x, p in joint.items() if all(v == mask_id or v == x[i] for i, v in enumerate(xt))}
    total = sum(consistent.values())
    for i in range(3):
        for v in (0, 1):
            mass = sum(p for x, p in consistent.items() if x[i] == v) / total
            logits[i, v] = np.log(mass) if mass > 0 else -np.inf
        logits[i, mask_id] = -np.inf
    return logits


def test_elbo_of_perfect_model_equals_true_nll() -> None:
    joint, mask_id = _joint_distribution(), 2
    noise = LogLinearNoise(eps=0.0)
    nodes, weights = np.polynomial.legendre.leggauss(6)  # exact for the polynomial integrand in t
    times, weights = (nodes + 1) / 2, weights / 2
    for x, p in joint.items():
        nelbo = 0.0
        for mask in itertools.product((False, True), repeat=3):
            xt = tuple(mask_id if m else v for v, m in zip(x, mask))
            logits = _perfect_logits(xt, joint, mask_id)[None]
            m = sum(mask)
            for t, w in zip(times, weights):
                prob_mask = t**m * (1 - t) ** (3 - m)
                loss = masked_diffusion_loss(
                    logits,
                    torch.tensor([x]),
                    torch.tensor([xt]),
                    torch.tensor([t], dtype=torch.float64),
                    mask_token_id=mask_id,
                    noise=noise,
                    reduction="none",
                )
                nelbo += w * prob_mask * loss.item()
        assert nelbo == pytest.approx(-np.log(p), rel=1e-6)  # the loss runs in float32


def test_monte_carlo_elbo_with_forward_mask_is_unbiased() -> None:
    joint, mask_id = _joint_distribution(), 2
    x = (1, 0, 1)
    g = torch.Generator().manual_seed(7)
    n = 20000
    t = sample_times(n, eps=1e-3, generator=g)
    xt = forward_mask(
        torch.tensor([x]).expand(n, 3), t, mask_token_id=mask_id, noise=LogLinearNoise(1e-3), generator=g
    )
    table = {
        xt_key: _perfect_logits(xt_key, joint, mask_id).float()
        for xt_key in itertools.product((0, 1, mask_id), repeat=3)
    }
    logits = torch.stack([table[tuple(row)] for row in xt.tolist()])
    losses = masked_diffusion_loss(
        logits,
        torch.tensor([x]).expand(n, 3),
        xt,
        t,
        mask_token_id=mask_id,
        noise=LogLinearNoise(1e-3),
        reduction="none",
    )
    stderr = losses.std().item() / n**0.5
    assert abs(losses.mean().item() + np.log(joint[x])) < 4 * stderr + 1e-3


def test_forward_mask_rate_and_sample_times() -> None:
    x0 = torch.zeros(4, 5000, dtype=torch.long)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    xt = forward_mask(x0, t, mask_token_id=9, noise=LogLinearNoise(eps=0.0))
    rates = (xt == 9).float().mean(-1)
    torch.testing.assert_close(rates, t, atol=0.02, rtol=0)
    ts = sample_times(8, eps=0.1, generator=torch.Generator().manual_seed(0))
    assert ts.min() >= 0.1 and ts.max() <= 1.0
    # antithetic: one sample in each stratum of width 1/8 (before the affine map)
    strata = torch.floor((ts - 0.1) / 0.9 * 8).long().sort().values
    assert torch.equal(strata, torch.arange(8))


def test_block_decode_fills_blocks_in_order_with_most_confident_first() -> None:
    mask_id, length, prompt = 5, 10, 2
    confidences = torch.tensor([1.0, 1.0, 0.3, 4.0, 2.0, 1.0, 0.5, 3.0, 2.5, 0.1])
    history: list[torch.Tensor] = []

    def forward(tokens: torch.Tensor) -> torch.Tensor:
        history.append(tokens.clone())
        logits = torch.zeros(tokens.shape[0], length, mask_id + 1)
        logits[:, torch.arange(length), torch.arange(length) % mask_id] = confidences
        return logits

    tokens = torch.full((1, length), mask_id)
    tokens[0, :prompt] = torch.tensor([3, 4])
    out = block_decode(
        forward,
        tokens,
        mask_token_id=mask_id,
        num_steps=4,
        block_length=4,
        prompt_length=prompt,
        params=SamplingParams(temperature=0),
    )
    assert out[0].tolist() == [3, 4] + [i % mask_id for i in range(2, length)]
    assert len(history) == 4
    # 2 steps per block; step 0 commits 2 of block 0 (positions 2..5) by confidence: 3 (4.0) and 4 (2.0); block 1 untouched
    committed = (history[1][0] != mask_id).nonzero().flatten().tolist()
    assert committed == [0, 1, 3, 4]
    # after block 0's two steps all of block 0 and nothing of block 1 is revealed
    assert (history[2][0, 2:6] != mask_id).all() and (history[2][0, 6:] == mask_id).all()


def test_block_decode_random_remasking_and_batches() -> None:
    mask_id = 6
    model = _independent_model(torch.full((8, 6), 1 / 6), mask_id, [])
    out = block_decode(
        model,
        torch.full((3, 8), mask_id),
        mask_token_id=mask_id,
        num_steps=4,
        block_length=4,
        remasking="random",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (3, 8) and not (out == mask_id).any()


def test_discrete_diffusion_errors() -> None:
    sampler = MaskedDiffusionSampler(mask_token_id=3)
    with pytest.raises(SamplingError, match="set_steps"):
        sampler.step(torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.long), 0)
    with pytest.raises(SamplingError, match="block_length"):
        block_decode(
            lambda t: t, torch.zeros(1, 10, dtype=torch.long), mask_token_id=3, num_steps=4, block_length=4
        )
    with pytest.raises(SamplingError, match="multiple of the number of blocks"):
        block_decode(
            lambda t: t, torch.zeros(1, 8, dtype=torch.long), mask_token_id=3, num_steps=3, block_length=4
        )
    with pytest.raises(SamplingError, match="shape"):
        masked_diffusion_loss(
            torch.zeros(2, 3, 4),
            torch.zeros(2, 3, dtype=torch.long),
            torch.zeros(2, 3, dtype=torch.long),
            torch.ones(3),
            mask_token_id=3,
        )
