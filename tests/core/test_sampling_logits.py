"""Logit processors: each filter against a brute-force definition, sampling statistics, validation."""

from __future__ import annotations

import math

import pytest
import torch

from genloom.core.sampling.errors import SamplingError
from genloom.core.sampling.logits import (
    SamplingParams,
    apply_temperature,
    min_p_filter,
    process_logits,
    sample_from_logits,
    top_k_filter,
    top_p_filter,
    typical_filter,
)


def _kept(x: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(x)).flatten().tolist())


def _nucleus_reference(logits: torch.Tensor, top_p: float) -> set[int]:
    probs = torch.softmax(logits.double(), -1).tolist()
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, mass = set(), 0.0
    for i in order:
        kept.add(i)
        mass += probs[i]
        if mass >= top_p:
            break
    return kept


def test_temperature_scales_logits() -> None:
    x = torch.tensor([[1.0, 2.0, 4.0]])
    torch.testing.assert_close(apply_temperature(x, 2.0), x / 2)
    with pytest.raises(SamplingError, match="greedy"):
        apply_temperature(x, 0.0)


def test_top_k_keeps_the_k_largest() -> None:
    x = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    assert _kept(top_k_filter(x, 2)[0]) == {1, 3}
    assert _kept(top_k_filter(x, 10)[0]) == set(range(5))
    assert _kept(process_logits(x, SamplingParams(top_k=3))[0]) == {1, 3, 4}


@pytest.mark.parametrize("top_p", [0.3, 0.6, 0.9, 0.999])
def test_top_p_matches_reference_with_and_without_top_k(top_p: float) -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 50, generator=g) * 2
    out = top_p_filter(logits, top_p)
    for row in range(6):
        assert _kept(out[row]) == _nucleus_reference(logits[row], top_p)
    # top-k then top-p: the nucleus is taken over the renormalised k survivors.
    both = process_logits(logits, SamplingParams(top_k=10, top_p=top_p))
    for row in range(6):
        top10 = torch.topk(logits[row], 10).indices
        restricted = torch.full_like(logits[row], float("-inf"))
        restricted[top10] = logits[row, top10]
        assert _kept(both[row]) == _nucleus_reference(restricted, top_p)
        finite = torch.isfinite(both[row])
        torch.testing.assert_close(both[row][finite], logits[row][finite])


def test_min_p_threshold_relative_to_top_token() -> None:
    probs = torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04])
    logits = probs.log()[None]
    # min_p 0.15 -> threshold 0.075: keeps 0.5, 0.3, 0.1
    assert _kept(min_p_filter(logits, 0.15)[0]) == {0, 1, 2}
    assert _kept(process_logits(logits, SamplingParams(min_p=0.7))[0]) == {0}


def test_typical_filter_matches_definition() -> None:
    probs = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05])
    logits = probs.log()[None]
    entropy = -(probs * probs.log()).sum()
    distance = (-probs.log() - entropy).abs()
    order = torch.argsort(distance).tolist()
    expected, mass = set(), 0.0
    for i in order:
        expected.add(i)
        mass += probs[i].item()
        if mass >= 0.5:
            break
    assert _kept(typical_filter(logits, 0.5)[0]) == expected
    assert len(expected) < 5  # the case actually filters something


def test_greedy_and_filters_never_sample_filtered_tokens() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 30, generator=g)
    torch.testing.assert_close(sample_from_logits(logits, SamplingParams(temperature=0.0)), logits.argmax(-1))
    params = SamplingParams(temperature=0.8, top_k=5, top_p=0.7)
    allowed = torch.isfinite(process_logits(logits, params))
    for _ in range(10):
        tokens = sample_from_logits(logits, params, generator=g)
        assert tokens.shape == (64,) and tokens.dtype == torch.int64
        assert allowed.gather(1, tokens[:, None]).all()


def test_samples_follow_the_softmax_distribution() -> None:
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1])
    logits = probs.log().expand(40_000, 4).contiguous()
    g = torch.Generator().manual_seed(3)
    tokens = sample_from_logits(logits, SamplingParams(temperature=1.0), generator=g)
    counts = torch.bincount(tokens, minlength=4).double()
    expected = probs.double() * tokens.numel()
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 16.27  # chi-square, 3 dof, p = 0.001
    # temperature 2 flattens: p ∝ p^(1/2)
    hot = sample_from_logits(logits, SamplingParams(temperature=2.0), generator=g)
    flat = probs.sqrt() / probs.sqrt().sum()
    freq = torch.bincount(hot, minlength=4).double() / hot.numel()
    torch.testing.assert_close(freq, flat.double(), atol=0.01, rtol=0)


def test_top_k_samples_follow_the_renormalised_survivors() -> None:
    probs = torch.tensor([0.1, 0.5, 0.15, 0.25])  # top-3 survivors: ids 1, 3, 2
    logits = probs.log().expand(40_000, 4).contiguous()
    g = torch.Generator().manual_seed(4)
    tokens = sample_from_logits(logits, SamplingParams(top_k=3), generator=g)
    expected = torch.tensor([0.0, 0.5, 0.15, 0.25]) / 0.9
    freq = torch.bincount(tokens, minlength=4).double() / tokens.numel()
    assert freq[0] == 0
    torch.testing.assert_close(freq, expected.double(), atol=0.01, rtol=0)
    # top-k 3 then top-p 0.6 over the renormalised survivors keeps ids 1 (0.556) and 3 (0.278)
    tokens = sample_from_logits(logits, SamplingParams(top_k=3, top_p=0.6), generator=g)
    freq = torch.bincount(tokens, minlength=4).double() / tokens.numel()
    torch.testing.assert_close(
        freq, torch.tensor([0.0, 2 / 3, 0.0, 1 / 3], dtype=torch.float64), atol=0.01, rtol=0
    )


def test_seeded_sampling_is_reproducible_and_batched_shapes() -> None:
    logits = torch.randn(2, 3, 11)
    a = sample_from_logits(logits, SamplingParams(top_p=0.9), torch.Generator().manual_seed(5))
    b = sample_from_logits(logits, SamplingParams(top_p=0.9), torch.Generator().manual_seed(5))
    assert a.shape == (2, 3) and torch.equal(a, b)


def test_bfloat16_logits_are_supported() -> None:
    logits = torch.randn(4, 100).to(torch.bfloat16)
    out = sample_from_logits(logits, SamplingParams(top_k=20, top_p=0.9, min_p=0.01, typical_p=0.95))
    assert out.shape == (4,)
    assert torch.isfinite(process_logits(logits, SamplingParams(top_k=20))).sum() == 80


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"typical_p": 0.0}, "typical_p"),
    ],
)
def test_invalid_params_raise_clear_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_bad_logits_raise() -> None:
    with pytest.raises(SamplingError, match="floating-point"):
        sample_from_logits(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(SamplingError, match="V >= 1"):
        process_logits(torch.ones(2, 0), SamplingParams())


def test_radix_kth_largest_is_topks_kth_value_bit_for_bit() -> None:
    """The compiled top-k threshold (radix select) must be exactly torch.topk's k-th value: ties, -inf,
    signed zeros, huge and tiny magnitudes, bf16."""
    from genloom.core.sampling.logits import _radix_kth_largest

    gen = torch.Generator().manual_seed(0)
    for trial in range(60):
        vocab = int(torch.randint(1, 2500, (), generator=gen))
        x = torch.randn(3, vocab, generator=gen) * 10.0 ** int(torch.randint(-4, 5, (), generator=gen))
        if trial % 3 == 0:
            x = x.round()  # many ties
        if trial % 5 == 0:
            x[0, : vocab // 2] = float("-inf")
        if trial % 7 == 0:
            x[1] = -0.0
        k = int(torch.randint(1, vocab + 1, (), generator=gen))
        assert torch.equal(_radix_kth_largest(x, k), torch.topk(x, k, dim=-1).values[..., -1:])
    half = torch.randn(4, 1000, generator=gen).bfloat16()
    assert torch.equal(_radix_kth_largest(half, 17), torch.topk(half, 17).values[..., -1:])


def test_top_k_sampling_under_compile_equals_eager_and_stays_in_the_top_k() -> None:
    from genloom.core.sampling.logits import draw_noise, sample_with_noise

    params = SamplingParams(temperature=0.7, top_k=40)
    compiled_sampler = torch.compile(sample_with_noise, backend="eager", fullgraph=True)
    for rows in (3, 64):  # radix select (few rows) and torch.topk (many) under compile
        logits = torch.randn(rows, 500, generator=torch.Generator().manual_seed(rows))
        noise = draw_noise(tuple(logits.shape), params, torch.Generator().manual_seed(2))
        assert noise.shape == logits.shape  # top-k alone: Gumbel over the vocabulary, no survivor gather
        eager = sample_with_noise(logits, params, noise)
        assert torch.equal(eager, compiled_sampler(logits, params, noise))
        ranks = (logits > logits.gather(-1, eager[:, None])).sum(-1)
        assert int(ranks.max()) < 40
