"""Cache-based AR decoders: cached = naive recompute; speculative and Jacobi greedy = plain greedy;
speculative sampling and SJD keep the target distribution (chi-square on a vocabulary of 8)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from genloom.core.nn import EncoderDecoder, Transformer, TransformerConfig
from genloom.core.sampling.autoregressive import DecodeStats, generate
from genloom.core.sampling.errors import SamplingError
from genloom.core.sampling.jacobi import jacobi_generate, speculative_jacobi_generate
from genloom.core.sampling.logits import SamplingParams
from genloom.core.sampling.speculative import speculative_generate

GREEDY = SamplingParams(temperature=0.0)


def _lm(seed: int, vocab: int = 13, layers: int = 2, sharpen: float = 1.0) -> Transformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        dim=32, n_layers=layers, n_heads=4, n_kv_heads=2, vocab_size=vocab, rope="1d", max_seq_len=40
    )
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.output.weight.mul_(sharpen)
    return model


@torch.no_grad()
def _naive_greedy(
    model: Transformer, prompt: torch.Tensor, n: int, *, cfg_scale=None, uncond=None
) -> torch.Tensor:
    seq, useq = prompt.clone(), None if uncond is None else uncond.clone()
    for _ in range(n):
        last = model(seq)[:, -1]
        if cfg_scale is not None:
            u = model(useq)[:, -1]
            last = u + cfg_scale * (last - u)
        nxt = last.argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
        useq = None if useq is None else torch.cat([useq, nxt], 1)
    return seq[:, prompt.shape[1] :]


def test_cached_generation_equals_naive_recompute() -> None:
    model = _lm(0, sharpen=20.0)
    prompt = torch.randint(0, 13, (3, 4), generator=torch.Generator().manual_seed(0))
    stats = DecodeStats()
    out = generate(model, prompt, 12, params=GREEDY, stats=stats)
    model.remove_cache()
    expected = _naive_greedy(model, prompt, 12)
    assert out.shape == (3, 12) and out.dtype == torch.long
    assert torch.equal(out, expected)
    assert stats.forward_passes == 12 and stats.tokens_per_pass == 1.0


def test_cached_cfg_generation_equals_naive_cfg() -> None:
    model = _lm(1, sharpen=20.0)
    prompt = torch.randint(1, 13, (2, 3), generator=torch.Generator().manual_seed(1))
    uncond = torch.zeros_like(prompt)
    out = generate(model, prompt, 8, params=GREEDY, cfg_scale=3.0, uncond_prompt=uncond)
    model.remove_cache()
    expected = _naive_greedy(model, prompt, 8, cfg_scale=3.0, uncond=uncond)
    plain = _naive_greedy(model, prompt, 8)
    assert torch.equal(out, expected)
    assert not torch.equal(expected, plain)  # guidance really changed the decision somewhere


def test_eos_stops_rows() -> None:
    model = _lm(2, sharpen=20.0)
    prompt = torch.randint(0, 13, (2, 3), generator=torch.Generator().manual_seed(2))
    free = generate(model, prompt, 10, params=GREEDY)
    eos = int(free[0, 2])
    out = generate(model, prompt, 10, params=GREEDY, eos_id=eos)
    first = int((free[0] == eos).nonzero()[0])
    assert torch.equal(out[0, : first + 1], free[0, : first + 1]) and torch.all(out[0, first:] == eos)
    for decoder in (speculative_generate, jacobi_generate):
        args = (model, _lm(5), prompt, 10) if decoder is speculative_generate else (model, prompt, 10)
        kwargs = dict(params=GREEDY) if decoder is speculative_generate else {}
        assert torch.equal(decoder(*args, eos_id=eos, **kwargs), out)


@pytest.mark.parametrize("gamma", [1, 3, 5])
def test_speculative_greedy_equals_plain_greedy(gamma: int) -> None:
    target, draft = _lm(0, sharpen=20.0), _lm(7, layers=1, sharpen=20.0)
    prompt = torch.randint(0, 13, (2, 5), generator=torch.Generator().manual_seed(3))
    plain = generate(target, prompt, 15, params=GREEDY)
    stats = DecodeStats()
    out = speculative_generate(target, draft, prompt, 15, gamma=gamma, params=GREEDY, stats=stats)
    assert torch.equal(out, plain)
    assert stats.new_tokens == 15 and stats.forward_passes <= 16


def test_speculative_with_target_as_draft_accepts_every_draft() -> None:
    target = _lm(0, sharpen=20.0)
    prompt = torch.randint(0, 13, (1, 1), generator=torch.Generator().manual_seed(4))
    stats = DecodeStats()
    out = speculative_generate(target, target, prompt, 16, gamma=3, params=GREEDY, stats=stats)
    assert torch.equal(out, generate(target, prompt, 16, params=GREEDY))
    assert stats.forward_passes == 4  # 16 tokens in rounds of gamma + 1 = 4 tokens


@pytest.mark.parametrize("window", [1, 4, 9])
def test_jacobi_greedy_equals_plain_greedy(window: int) -> None:
    model = _lm(3, sharpen=20.0)
    prompt = torch.randint(0, 13, (2, 3), generator=torch.Generator().manual_seed(5))
    plain = generate(model, prompt, 20, params=GREEDY)
    stats = DecodeStats()
    out = jacobi_generate(model, prompt, 20, window=window, stats=stats)
    assert torch.equal(out, plain)
    assert stats.new_tokens == 20 and stats.forward_passes <= 21


def test_jacobi_converges_on_a_periodic_model() -> None:
    """Once a greedy sequence becomes periodic, the window guesses are right and Jacobi commits several
    tokens per pass (a fixed point of the Jacobi iteration)."""
    model = _lm(3, vocab=5, sharpen=60.0)
    prompt = torch.tensor([[1, 2]])
    stats = DecodeStats()
    out = jacobi_generate(model, prompt, 30, window=6, stats=stats)
    assert torch.equal(out, generate(model, prompt, 30, params=GREEDY))
    assert stats.forward_passes < 30


def _exact_marginals(model: Transformer, prompt: list[int], vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """P(t1, t2) [V, V] and P(t3) [V] of plain sampling after `prompt`, by enumeration."""
    model.remove_cache()
    pairs = torch.cartesian_prod(torch.arange(vocab), torch.arange(vocab))
    seqs = torch.cat([torch.tensor(prompt).expand(len(pairs), -1), pairs], 1)
    with torch.no_grad():
        probs = torch.softmax(model(seqs).double(), -1)
    n = len(prompt)
    p1 = probs[0, n - 1]
    p2 = probs[::vocab, n].reshape(vocab, vocab)  # [t1, t2]
    joint12 = p1[:, None] * p2
    p3 = (joint12.reshape(-1, 1) * probs[:, n + 1]).sum(0)
    return joint12, p3


@pytest.mark.parametrize("decoder", ["speculative", "sjd"])
def test_sampling_keeps_the_target_distribution(decoder: str) -> None:
    """1600 draws of the 2nd and 3rd generated tokens against the exact marginals of plain sampling.

    The draft is the target with slightly perturbed weights (so several drafts per round are often
    accepted, exercising every branch); SJD uses a softer target for the same reason. An always-accept
    bug is rejected by this test with p < 1e-90 (checked while writing it)."""
    vocab, prompt = 8, [3, 1]
    target = _lm(11, vocab=vocab, layers=1, sharpen=40.0 if decoder == "speculative" else 10.0)
    draft = _lm(11, vocab=vocab, layers=1, sharpen=40.0)
    noise = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(0.003 * torch.randn(p.shape, generator=noise))
    joint12, p3 = _exact_marginals(target, prompt, vocab)
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=1.0)
    rows, calls, n_new = 200, 8, 3
    batch = torch.tensor([prompt] * rows)
    samples, stats = [], DecodeStats()
    for _ in range(calls):
        if decoder == "speculative":
            out = speculative_generate(
                target, draft, batch, n_new, gamma=2, params=params, generator=gen, stats=stats
            )
        else:
            out = speculative_jacobi_generate(
                target, batch, n_new, window=3, params=params, generator=gen, stats=stats
            )
        samples.append(out)
    tokens = torch.cat(samples)
    n = tokens.shape[0]
    t2 = torch.bincount(tokens[:, 1], minlength=vocab).double().numpy()
    t3 = torch.bincount(tokens[:, 2], minlength=vocab).double().numpy()
    assert chisquare(t2, (joint12.sum(0) * n).numpy()).pvalue > 1e-3
    assert chisquare(t3, (p3 * n).numpy()).pvalue > 1e-3
    # the test has power: the first token's distribution is not the second's, and is clearly rejected
    assert chisquare(t2, (joint12.sum(1) * n).numpy()).pvalue < 1e-6
    assert stats.new_tokens == n_new * calls
    # one row at a time, drafts are often accepted: fewer passes (minus 1 prefill per call) than tokens
    single, calls = DecodeStats(), 20
    for _ in range(calls):
        if decoder == "speculative":
            speculative_generate(
                target, draft, batch[:1], n_new, gamma=2, params=params, generator=gen, stats=single
            )
        else:
            speculative_jacobi_generate(
                target, batch[:1], n_new, window=3, params=params, generator=gen, stats=single
            )
    assert single.forward_passes - calls < calls * n_new


def test_bad_arguments_raise_sampling_errors() -> None:
    model = _lm(0)
    prompt = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(SamplingError, match="integer tensor"):
        generate(model, torch.zeros(1, 2), 3)
    with pytest.raises(SamplingError, match="max_new_tokens"):
        generate(model, prompt, 0)
    with pytest.raises(SamplingError, match="uncond_prompt"):
        generate(model, prompt, 3, cfg_scale=2.0)
    with pytest.raises(SamplingError, match="gamma"):
        speculative_generate(model, model, prompt, 3, gamma=0)
    with pytest.raises(SamplingError, match="window"):
        jacobi_generate(model, prompt, 3, window=0)
    with pytest.raises(SamplingError, match="CachedLM"):
        generate(object(), prompt, 3)


def test_seq2seq_generation_on_the_cached_decoder_equals_naive() -> None:
    torch.manual_seed(0)
    enc = TransformerConfig(dim=32, n_layers=1, n_heads=4, vocab_size=11, rope="1d", max_seq_len=16)
    dec = TransformerConfig(
        dim=32, n_layers=2, n_heads=4, vocab_size=11, cross_attn=True, rope="1d", max_seq_len=16
    )
    model = EncoderDecoder(enc, dec).eval()
    with torch.no_grad():
        model.decoder.output.weight.mul_(20.0)
    src = torch.randint(0, 11, (2, 7), generator=torch.Generator().manual_seed(6))
    bos = torch.zeros(2, 1, dtype=torch.long)
    out = generate(model.start_decoding(src), bos, 9, params=GREEDY)
    model.decoder.remove_cache()
    seq = bos
    with torch.no_grad():
        for _ in range(9):
            seq = torch.cat([seq, model(src, seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq[:, 1:])
