"""Mask-Predict as a `MaskedSampler` variant: committed tokens can be re-masked and change, padding and
prompts are never touched, counts follow the linear decay, and the sampler equals a plain reference loop."""

from __future__ import annotations

import pytest
import torch

from genloom.core.sampling.errors import SamplingError
from genloom.core.sampling.logits import SamplingParams
from genloom.core.sampling.masked import MaskedSampler

MASK, PAD, VOCAB = 0, 1, 9
GREEDY = SamplingParams(temperature=0.0)


def _logits_for(choices: list[tuple[int, float]]) -> torch.Tensor:
    """[1, L, V] logits whose argmax at position l is choices[l][0] with probability ~ exp(choices[l][1])
    (> 1/V; the other tokens share the rest equally)."""
    logits = torch.zeros(1, len(choices), VOCAB)
    for pos, (token, log_p) in enumerate(choices):
        p = torch.tensor(log_p).exp()
        logits[0, pos] = torch.log((1 - p) / (p * (VOCAB - 1)))
        logits[0, pos, token] = 0.0
    return logits


def test_a_committed_token_is_remasked_and_changes() -> None:
    sampler = MaskedSampler(mask_token_id=MASK, schedule="linear", variant="mask_predict")
    sampler.set_steps(3)
    tokens = torch.full((1, 3), MASK)
    n0 = torch.tensor([3])
    out = sampler.step(
        _logits_for([(5, -0.1), (6, -1.5), (7, -1.2)]), tokens, 0, num_initial_masked=n0, params=GREEDY
    )
    assert out.tokens.tolist() == [[5, MASK, MASK]]  # 2 of 3 stay masked: the two least likely
    out = sampler.step(
        _logits_for([(8, -0.5), (6, -0.01), (7, -0.05)]),
        out.tokens,
        1,
        num_initial_masked=n0,
        params=GREEDY,
        scores=out.scores,
    )
    # position 0 (committed at step 0 with log p ~ -0.1) is now the least likely token: masked again
    assert out.tokens.tolist() == [[MASK, 6, 7]] and out.remasked.tolist() == [[True, False, False]]
    out = sampler.step(
        _logits_for([(8, -0.2), (3, -0.01), (3, -0.01)]),
        out.tokens,
        2,
        num_initial_masked=n0,
        params=GREEDY,
        scores=out.scores,
    )
    assert out.tokens.tolist() == [[8, 6, 7]]  # position 0 changed from 5 to 8; the others were kept
    # MaskGIT-style variants never touch a committed token
    maskgct = MaskedSampler(mask_token_id=MASK, schedule="linear", variant="maskgct", choice_temperature=0.0)
    maskgct.set_steps(3)
    first = maskgct.step(
        _logits_for([(5, -0.1), (6, -1.5), (7, -1.2)]), tokens, 0, num_initial_masked=n0, params=GREEDY
    )
    second = maskgct.step(
        _logits_for([(8, -0.5), (6, -0.01), (7, -0.05)]),
        first.tokens,
        1,
        num_initial_masked=n0,
        params=GREEDY,
    )
    assert second.tokens[0, 0] == 5


def _toy_model(seed: int):
    """A fixed random function of the whole sequence, so that re-masking changes later predictions."""
    gen = torch.Generator().manual_seed(seed)
    embed = torch.randn(VOCAB, 8, generator=gen)
    position = torch.randn(12, 8, generator=gen)
    out = torch.randn(8, VOCAB, generator=gen) * 2

    def forward(tokens: torch.Tensor) -> torch.Tensor:
        hidden = embed[tokens] + position[: tokens.shape[1]]
        return torch.tanh(hidden + hidden.mean(1, keepdim=True)) @ out

    return forward


def _reference_mask_predict(forward, tokens: torch.Tensor, iterations: int) -> torch.Tensor:
    """Mask-Predict written out (Ghazvininejad et al. 2019), padding = any non-mask start token."""
    valid = tokens == MASK
    lengths = valid.sum(1)
    scores = torch.zeros(tokens.shape)
    for t in range(iterations):
        logits = forward(tokens)
        logits[..., MASK] = float("-inf")
        log_probs, predicted = logits.log_softmax(-1).max(-1)
        update = tokens == MASK
        tokens = torch.where(update, predicted, tokens)
        scores = torch.where(update, log_probs, scores)
        if t == iterations - 1:
            break
        num_remask = lengths * (iterations - 1 - t) // iterations
        rank = scores.masked_fill(~valid, float("inf")).argsort(dim=1, stable=True).argsort(dim=1)
        tokens = tokens.masked_fill((rank < num_remask[:, None]) & valid, MASK)
    return tokens


@pytest.mark.parametrize("iterations", [1, 3, 4, 6, 10])
def test_sampler_equals_the_reference_loop_and_never_touches_padding(iterations: int) -> None:
    forward = _toy_model(iterations)
    lengths = torch.randint(1, 13, (64,), generator=torch.Generator().manual_seed(0))
    tokens = torch.where(torch.arange(12)[None] < lengths[:, None], MASK, PAD)
    sampler = MaskedSampler(mask_token_id=MASK, schedule="linear", variant="mask_predict")
    sampler.set_steps(iterations)
    ours = sampler.sample(forward, tokens.clone(), params=GREEDY)
    assert torch.equal(ours, _reference_mask_predict(forward, tokens.clone(), iterations))
    assert bool((ours[tokens == PAD] == PAD).all()) and not bool((ours == MASK).any())
    # step by step: the number masked after step t is floor(N0 (n - 1 - t) / n), padding never counted
    state, scores = tokens.clone(), None
    for t in range(iterations):
        out = sampler.step(forward(state), state, t, num_initial_masked=lengths, params=GREEDY, scores=scores)
        state, scores = out.tokens, out.scores
        assert torch.equal((state == MASK).sum(1), lengths * (iterations - 1 - t) // iterations)
        assert not bool(out.remasked[tokens == PAD].any())


def test_mask_predict_errors() -> None:
    with pytest.raises(SamplingError, match="choice_temperature must be 0"):
        MaskedSampler(mask_token_id=MASK, variant="mask_predict", choice_temperature=1.0)
    sampler = MaskedSampler(mask_token_id=MASK, variant="maskgit")
    sampler.set_steps(2)
    tokens = torch.full((1, 3), MASK)
    with pytest.raises(SamplingError, match="Mask-Predict state"):
        sampler.step(
            torch.zeros(1, 3, VOCAB),
            tokens,
            0,
            num_initial_masked=torch.tensor([3]),
            scores=torch.zeros(1, 3),
        )
