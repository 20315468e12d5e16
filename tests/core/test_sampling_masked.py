"""MaskGIT / MAGNeT unmasking: exact scheduled counts, revealed tokens frozen, no mask left, errors."""

from __future__ import annotations

import math

import pytest
import torch

from genloom.core.sampling.errors import SamplingError
from genloom.core.sampling.logits import SamplingParams
from genloom.core.sampling.masked import MaskedSampler, mask_ratio

MASK = 7
VOCAB = 8  # ids 0..6 are real tokens, 7 is the mask


def _random_model(seed: int):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(64, VOCAB, generator=g)

    def forward(tokens: torch.Tensor) -> torch.Tensor:
        # depends on the current tokens, so the test sees a different prediction at every step
        context = tokens.sum(-1, keepdim=True) % 64
        return table[(context + torch.arange(tokens.shape[1])) % 64]

    return forward


def test_mask_schedules_endpoints() -> None:
    for name in ("cosine", "linear", "square", "cubic", "sqrt"):
        assert mask_ratio(name, 0.0) == pytest.approx(1.0)
        assert mask_ratio(name, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert mask_ratio("cosine", 0.5) == pytest.approx(math.cos(math.pi / 4))
    assert mask_ratio("square", 0.5) == pytest.approx(0.75)


@pytest.mark.parametrize("variant", ["maskgit", "magnet", "maskgct"])
def test_mask_counts_follow_the_schedule(variant: str) -> None:
    sampler = MaskedSampler(mask_token_id=MASK, variant=variant)
    sampler.set_steps(5)
    counts = sampler.mask_counts(torch.tensor([32, 10]))[:, 0].tolist()
    if variant == "magnet":  # read on linspace(0, 1, n) before each prediction
        expected = [max(1, math.floor(32 * math.cos(math.pi / 2 * (i + 1) / 4))) for i in range(4)] + [0]
    elif variant == "maskgit":
        expected = [math.floor(32 * math.cos(math.pi / 2 * (i + 1) / 5)) for i in range(4)] + [0]
    else:  # MaskGCT: floor(sin(t pi / 2) * N) at t = 1 - (i + 1) / n
        expected = [math.floor(32 * math.sin((1 - (i + 1) / 5) * math.pi / 2)) for i in range(4)] + [0]
    assert counts == expected
    # the clamps differ on few tokens: MaskGIT reveals at least one per step, MaskGCT may reveal none
    few = sampler.mask_counts(torch.tensor([3]))[:, 0].tolist()
    assert few == {"maskgit": [2, 1, 1, 1, 0], "magnet": [2, 2, 1, 1, 0], "maskgct": [2, 2, 1, 0, 0]}[variant]


@pytest.mark.parametrize("variant", ["maskgit", "magnet", "maskgct"])
def test_unmasking_reveals_scheduled_counts_and_freezes_revealed(variant: str) -> None:
    torch.manual_seed(0)
    batch, length, steps = 3, 24, 8
    tokens = torch.full((batch, length), MASK)
    tokens[1, :5] = torch.tensor([0, 1, 2, 3, 4])  # a prompt: only 19 masked in row 1
    n0 = (tokens == MASK).sum(-1)
    sampler = MaskedSampler(mask_token_id=MASK, variant=variant, choice_temperature=2.0)
    sampler.set_steps(steps)
    counts = sampler.mask_counts(n0)
    forward = _random_model(1)
    g = torch.Generator().manual_seed(2)
    for i in range(steps):
        out = sampler.step(forward(tokens), tokens, i, num_initial_masked=n0, generator=g)
        was_revealed = tokens != MASK
        assert torch.equal(out.tokens[was_revealed], tokens[was_revealed])  # never changed
        assert torch.equal((out.tokens == MASK).sum(-1), counts[i])  # exactly the scheduled number
        assert torch.equal(out.tokens[out.tokens != MASK], out.predicted[out.tokens != MASK])
        tokens = out.tokens
    assert not (tokens == MASK).any()
    assert torch.equal(tokens[1, :5], torch.tensor([0, 1, 2, 3, 4]))


def test_lowest_confidence_tokens_are_remasked() -> None:
    # Greedy, no choice noise: position confidence is the max softmax prob, set explicitly per position.
    length = 6
    peak = torch.tensor([4.0, 0.5, 3.0, 0.1, 2.0, 1.0])
    logits = torch.zeros(1, length, VOCAB)
    logits[0, torch.arange(length), torch.arange(length) % 7] = peak
    sampler = MaskedSampler(mask_token_id=MASK, schedule="linear", choice_temperature=0.0)
    sampler.set_steps(2)  # after step 0: floor(6 * 0.5) = 3 stay masked
    tokens = torch.full((1, length), MASK)
    out = sampler.step(
        logits, tokens, 0, num_initial_masked=torch.tensor([length]), params=SamplingParams(temperature=0)
    )
    assert out.remasked[0].tolist() == [False, True, False, True, False, True]
    assert out.tokens[0].tolist() == [0, MASK, 2, MASK, 4, MASK]


def test_sample_loop_fills_everything_and_is_seeded() -> None:
    forward = _random_model(4)
    sampler = MaskedSampler(mask_token_id=MASK)
    sampler.set_steps(5)
    start = torch.full((2, 4, 4), MASK)  # a 2D token grid works too
    a = sampler.sample(
        forward_2d := (lambda t: forward(t.reshape(2, 16)).reshape(2, 4, 4, VOCAB)),
        start,
        generator=torch.Generator().manual_seed(9),
    )
    b = sampler.sample(forward_2d, start, generator=torch.Generator().manual_seed(9))
    assert a.shape == (2, 4, 4) and torch.equal(a, b)
    assert not (a == MASK).any() and a.max() < MASK


def test_model_never_produces_the_mask_token() -> None:
    logits = torch.zeros(2, 5, VOCAB)
    logits[..., MASK] = 50.0  # a model that loves the mask token
    sampler = MaskedSampler(mask_token_id=MASK)
    sampler.set_steps(1)
    out = sampler.step(logits, torch.full((2, 5), MASK), 0, num_initial_masked=torch.tensor([5, 5]))
    assert not (out.tokens == MASK).any()


def test_masked_sampler_errors() -> None:
    sampler = MaskedSampler(mask_token_id=MASK)
    with pytest.raises(SamplingError, match="set_steps"):
        sampler.step(
            torch.zeros(1, 2, VOCAB),
            torch.zeros(1, 2, dtype=torch.long),
            0,
            num_initial_masked=torch.tensor([2]),
        )
    sampler.set_steps(2)
    with pytest.raises(SamplingError, match="shape"):
        sampler.step(
            torch.zeros(1, 3, VOCAB),
            torch.zeros(1, 2, dtype=torch.long),
            0,
            num_initial_masked=torch.tensor([2]),
        )
    with pytest.raises(SamplingError, match="step_index"):
        sampler.step(
            torch.zeros(1, 2, VOCAB),
            torch.zeros(1, 2, dtype=torch.long),
            2,
            num_initial_masked=torch.tensor([2]),
        )
    with pytest.raises(SamplingError, match="schedule"):
        MaskedSampler(mask_token_id=MASK, schedule="zigzag")  # type: ignore[arg-type]
    with pytest.raises(SamplingError, match="num_steps"):
        sampler.set_steps(0)
