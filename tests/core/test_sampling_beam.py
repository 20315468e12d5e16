"""Beam search and cache re-ordering: beam 1 = greedy; a beam wide enough to keep every hypothesis returns
the brute-force best sequence; a re-ordered cache equals recomputing the re-ordered prefixes from scratch."""

from __future__ import annotations

import itertools

import pytest
import torch

from genloom.core.errors import InputError
from genloom.core.nn import EncoderDecoder, Transformer, TransformerConfig
from genloom.core.sampling import BeamLM, beam_search
from genloom.core.sampling.autoregressive import DecodeStats, generate
from genloom.core.sampling.errors import SamplingError
from genloom.core.sampling.logits import SamplingParams

ATOL = 1e-4


def _lm(seed: int, vocab: int, sharpen: float = 1.0) -> Transformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab, rope="1d", max_seq_len=32
    )
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.output.weight.mul_(sharpen)
    return model


def _seq2seq(seed: int) -> EncoderDecoder:
    torch.manual_seed(seed)
    enc = TransformerConfig(
        dim=32, n_layers=2, n_heads=4, vocab_size=11, mask="bidirectional", max_seq_len=16
    )
    dec = TransformerConfig(
        dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=9, cross_attn=True, rope="1d", max_seq_len=16
    )
    return EncoderDecoder(enc, dec).eval()


@pytest.mark.parametrize("eos_id", [None, 2])
def test_beam_size_one_equals_greedy(eos_id: int | None) -> None:
    model = _lm(0, vocab=7, sharpen=4.0)
    prompt = torch.randint(0, 7, (3, 4), generator=torch.Generator().manual_seed(1))
    greedy = generate(model, prompt, 9, params=SamplingParams(temperature=0.0), eos_id=eos_id)
    stats = DecodeStats()
    out = beam_search(model, prompt, 9, beam_size=1, eos_id=eos_id, stats=stats)
    assert torch.equal(out.tokens, greedy)
    assert stats.forward_passes <= 9


@torch.no_grad()
def _brute_force_best(
    model: Transformer, prompt: torch.Tensor, n: int, eos_id: int, length_penalty: float
) -> tuple[list[int], float]:
    """Score every distinct continuation (cut after its first eos) by full recomputation."""
    vocab = model.config.vocab_size
    seen, best, best_score = set(), None, float("-inf")
    for seq in itertools.product(range(vocab), repeat=n):
        cut = list(seq[: seq.index(eos_id) + 1]) if eos_id in seq else list(seq)
        if tuple(cut) in seen:
            continue
        seen.add(tuple(cut))
        full = torch.cat([prompt, torch.tensor(cut)])[None]
        log_probs = model(full)[0].log_softmax(-1)
        start = prompt.numel() - 1
        total = sum(float(log_probs[start + i, tok]) for i, tok in enumerate(cut))
        score = total / len(cut) ** length_penalty
        if score > best_score:
            best, best_score = cut, score
    return best, best_score


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_finds_the_brute_force_best(length_penalty: float) -> None:
    vocab, eos_id, n = 4, 3, 4
    model = _lm(2, vocab=vocab, sharpen=2.0)
    prompt = torch.randint(0, vocab - 1, (2, 3), generator=torch.Generator().manual_seed(3))
    out = beam_search(model, prompt, n, beam_size=vocab**n, eos_id=eos_id, length_penalty=length_penalty)
    model.remove_cache()
    for row in range(2):
        best, score = _brute_force_best(model, prompt[row], n, eos_id, length_penalty)
        padded = best + [eos_id] * (n - len(best))
        assert out.tokens[row].tolist() == padded
        assert int(out.lengths[row]) == len(best)
        assert float(out.scores[row]) == pytest.approx(score, abs=1e-4)


def test_length_penalty_changes_the_choice_towards_longer_outputs() -> None:
    """Raw-sum ranking favours the shortest sequences; normalising by length never picks a shorter one."""
    vocab, eos_id, n = 4, 3, 4
    model = _lm(5, vocab=vocab, sharpen=2.0)
    prompt = torch.randint(0, vocab - 1, (4, 3), generator=torch.Generator().manual_seed(6))
    raw = beam_search(model, prompt, n, beam_size=vocab**n, eos_id=eos_id, length_penalty=0.0)
    norm = beam_search(model, prompt, n, beam_size=vocab**n, eos_id=eos_id, length_penalty=1.0)
    assert bool((norm.lengths >= raw.lengths).all())


def _check_reorder(model: Transformer, prefixes: torch.Tensor, indices: torch.Tensor, static: bool) -> None:
    batch, length = prefixes.shape
    model.setup_cache(batch, length + 2, static=static)
    model(prefixes, input_pos=torch.arange(length))
    model.reorder_cache(indices)
    nxt = torch.randint(
        0, model.config.vocab_size, (indices.numel(), 1), generator=torch.Generator().manual_seed(9)
    )
    stepped = model(nxt, input_pos=torch.tensor([length]))[:, -1]
    model.remove_cache()
    recomputed = model(torch.cat([prefixes[indices], nxt], 1))[:, -1]
    torch.testing.assert_close(stepped, recomputed, atol=ATOL, rtol=0)


@pytest.mark.parametrize("static", [False, True])
@torch.no_grad()
def test_reorder_cache_equals_recomputing_reordered_prefixes(static: bool) -> None:
    model = _lm(4, vocab=13)
    prefixes = torch.randint(0, 13, (3, 5), generator=torch.Generator().manual_seed(4))
    _check_reorder(model, prefixes, torch.tensor([2, 0, 1]), static)  # in place (same batch)
    _check_reorder(model, prefixes, torch.tensor([1, 1, 0, 2, 2]), static)  # grows the batch


@torch.no_grad()
def test_encoder_decoder_reorder_gathers_cross_attention_context() -> None:
    model = _seq2seq(7)
    gen = torch.Generator().manual_seed(7)
    src = torch.randint(0, 11, (3, 6), generator=gen)
    src_mask = torch.ones(3, 6, dtype=torch.bool)
    src_mask[2, 4:] = False
    tgt = torch.randint(0, 9, (3, 4), generator=gen)
    decoder = model.start_decoding(src, src_padding_mask=src_mask)
    decoder.setup_cache(3, 6)
    decoder(tgt[:, :3], input_pos=torch.arange(3))
    indices = torch.tensor([2, 2, 0, 1])
    model.reorder_cache(indices)
    stepped = decoder(tgt[indices, 3:4], input_pos=torch.tensor([3]))[:, -1]
    decoder.remove_cache()
    decoder.clear_context()
    full = model(src[indices], tgt[indices], src_padding_mask=src_mask[indices])[:, -1]
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0)


@torch.no_grad()
def test_beam_search_on_encoder_decoder_expands_the_context() -> None:
    """Beam 1 on a seq2seq decoder (cached cross-attention of B rows, expanded inside) = greedy."""
    model = _seq2seq(8)
    src = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(8))
    prompt = torch.zeros(2, 1, dtype=torch.long)
    decoder = model.start_decoding(src)
    greedy = generate(decoder, prompt, 6, params=SamplingParams(temperature=0.0))
    decoder = model.start_decoding(src)
    beam1 = beam_search(decoder, prompt, 6, beam_size=1).tokens
    beam3 = beam_search(model.start_decoding(src), prompt, 6, beam_size=3, length_penalty=0.0)
    assert torch.equal(beam1, greedy)
    assert isinstance(decoder, BeamLM)
    # the reported score of the wider beam is the sum of log-probs of its tokens, recomputed from scratch
    decoder.remove_cache()
    decoder.clear_context()
    logp = model(src, torch.cat([prompt, beam3.tokens[:, :-1]], 1)).log_softmax(-1)
    recomputed = logp.gather(-1, beam3.tokens[..., None]).squeeze(-1).sum(1)
    torch.testing.assert_close(beam3.scores, recomputed, atol=1e-4, rtol=0)


def test_beam_errors_are_specific() -> None:
    model = _lm(0, vocab=7)
    prompt = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(SamplingError, match="beam_size"):
        beam_search(model, prompt, 3, beam_size=0)
    with pytest.raises(SamplingError, match="eos_id"):
        beam_search(model, prompt, 3, beam_size=2, eos_id=7)
    with pytest.raises(SamplingError, match="length_penalty"):
        beam_search(model, prompt, 3, beam_size=2, length_penalty=float("nan"))
    with pytest.raises(SamplingError, match="exclude eos_id"):
        beam_search(model, prompt, 3, beam_size=2, eos_id=1, suppress_ids=(1,))

    class NoReorder:
        def setup_cache(self, batch_size: int, max_seq_len: int) -> None: ...

        def truncate_cache(self, length: int) -> None: ...

    with pytest.raises(SamplingError, match="reorder_cache"):
        beam_search(NoReorder(), prompt, 3, beam_size=2)
    model.setup_cache(2, 4)
    with pytest.raises(InputError, match=r"\[0, 2\)"):
        model.reorder_cache(torch.tensor([0, 2]))
    with pytest.raises(InputError, match="1-D integer"):
        model.reorder_cache(torch.tensor([0.0, 1.0]))
