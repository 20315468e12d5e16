"""Synthetic tasks and the Markov source: targets, accuracy helpers, exact likelihood."""

import math

import pytest
import torch

from genloom.text.errors import TextInputError
from genloom.text.markov import MarkovChainSource
from genloom.text.tasks import NUM_SPECIAL, Seq2SeqTask


@pytest.mark.parametrize("name", ["copy", "reverse", "sort", "double", "two_dialect"])
def test_tasks_sample_valid_pairs(name):
    task = Seq2SeqTask(name=name, num_symbols=9, min_length=2, max_length=6)
    batch = task.sample(64, generator=torch.Generator().manual_seed(0))
    assert batch.source.shape[0] == 64 and batch.source_length.min() >= 2 and batch.source_length.max() <= 6
    for row in range(64):
        src = batch.source[row, : batch.source_length[row]].tolist()
        tgt = batch.target[row, : batch.target_length[row]].tolist()
        assert (
            task.is_correct(src, tgt) and min(src + tgt) >= NUM_SPECIAL and max(src + tgt) < task.vocab_size
        )
        assert (batch.target[row, batch.target_length[row] :] == 0).all()
    if name == "double":
        assert torch.equal(batch.target_length, 2 * batch.source_length)
    if name == "sort":
        assert not task.is_correct([7, 5], [7, 5])


def test_two_dialect_has_two_targets_and_detects_mixing():
    task = Seq2SeqTask(name="two_dialect", num_symbols=9)
    a, b = task.valid_targets([5, 6, 7])
    assert a == [8, 9, 10] and b == [11, 12, 13]
    batch = task.sample(400, generator=torch.Generator().manual_seed(1))
    first = [task.valid_targets(batch.source[r, : batch.source_length[r]].tolist())[0] for r in range(400)]
    picked_a = sum(batch.target[r, : batch.target_length[r]].tolist() == first[r] for r in range(400))
    assert 150 < picked_a < 250  # both dialects are drawn
    mixed = [[8, 12, 10]] + [[8, 9, 10]] * 3
    assert task.dialect_mixing(batch, mixed) == 0.25
    assert (
        task.accuracy(
            type(batch)(
                torch.tensor([[5, 6, 7]]), torch.tensor([3]), batch.target[:1], batch.target_length[:1]
            ),
            [[8, 12, 10]],
        )
        == 0.0
    )
    with pytest.raises(TextInputError, match="unknown synthetic task"):
        Seq2SeqTask(name="translate")


def test_markov_exact_likelihood():
    source = MarkovChainSource(num_states=5, seed=0)
    torch.testing.assert_close(source.transition.sum(-1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(source.initial @ source.transition, source.initial)
    seq = torch.tensor([[0, 1, 1, 4]])
    p = source.transition
    expected = math.log(source.initial[0] * p[0, 1] * p[1, 1] * p[1, 4])
    assert source.log_likelihood(seq).item() == pytest.approx(expected)
    # the Monte-Carlo NLL of samples agrees with the closed form
    samples = source.sample(4000, 16, generator=torch.Generator().manual_seed(0))
    mc = -source.log_likelihood(samples).mean().item() / 16
    assert mc == pytest.approx(source.expected_nll_per_token(16), rel=0.02)
    assert source.perplexity(16) < 5  # structured: below the uniform perplexity
    assert torch.equal(MarkovChainSource(num_states=5, seed=0).transition, source.transition)
