"""DA-Transformer beam search: beam 1 is lookahead decoding, a wide beam finds the brute-force best path,
and a bigram LM can change the chosen path."""

from __future__ import annotations

import itertools

import pytest
import torch

from genloom.text.dag import DagLinkHead, dag_lookahead_decode
from genloom.text.dag_beam import bigram_log_probs, dag_beam_decode
from genloom.text.errors import TextInputError


def _graph(batch=3, vertices=7, vocab=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    head = DagLinkHead(dim=8, num_heads=2)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    output_length = torch.tensor([vertices, vertices - 2, 4])[:batch]
    links = head(torch.randn(batch, vertices, 8, generator=g), output_length).float()
    token_logprobs = torch.randn(batch, vertices, vocab, generator=g).log_softmax(-1)
    return links, token_logprobs, output_length


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_of_one_is_lookahead_decoding(seed) -> None:
    links, logp, length = _graph(seed=seed)
    beam_tokens, beam_path = dag_beam_decode(links, logp, length, beam_size=1, pad=0)
    look_tokens, look_path = dag_lookahead_decode(links, logp, length, beta=1.0, pad=0)
    assert torch.equal(beam_path, look_path) and torch.equal(beam_tokens, look_tokens)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lookahead_with_a_bigram_lm_is_a_beam_of_one_with_it(seed) -> None:
    # each vertex emits one token, so the LM score of a jump depends on its two vertices only: the vectorised
    # lookahead (one argmax, capturable in a CUDA graph) finds the path beam search of width 1 walks
    links, logp, length = _graph(seed=seed, vertices=9, vocab=5)
    bigram = torch.randn(5, 5, generator=torch.Generator().manual_seed(10 + seed)).log_softmax(-1)
    beam_tokens, beam_path = dag_beam_decode(
        links, logp, length, beam_size=1, pad=0, bigram=bigram, lm_weight=2.0
    )
    look_tokens, look_path = dag_lookahead_decode(
        links, logp, length, beta=1.0, pad=0, bigram=bigram, lm_weight=2.0
    )
    assert torch.equal(beam_path, look_path) and torch.equal(beam_tokens, look_tokens)
    plain_tokens, plain_path = dag_lookahead_decode(links, logp, length, beta=1.0, pad=0)
    assert not torch.equal(plain_path, look_path)  # the LM (weight 2) changes some path


def _brute_force_best(links, logp, n, alpha=0.0):
    best_logp = logp.max(-1).values
    best, best_path = float("-inf"), None
    for size in range(2, n + 1):
        for middle in itertools.combinations(range(1, n - 1), size - 2):
            path = (0, *middle, n - 1)
            s = sum(links[a, b].item() for a, b in zip(path, path[1:])) + sum(
                best_logp[v].item() for v in path
            )
            s /= len(path) ** alpha
            if s > best:
                best, best_path = s, path
    return best_path


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_best_path_and_beats_lookahead(alpha) -> None:
    links, logp, length = _graph(seed=3)
    _, path = dag_beam_decode(links, logp, length, beam_size=64, length_alpha=alpha, pad=0)
    for b in range(3):
        n = int(length[b])
        expected = _brute_force_best(links[b], logp[b], n, alpha)
        got = tuple(v for v in path[b].tolist() if v >= 0)
        assert got == expected, (b, got, expected)


def test_bigram_lm_changes_the_chosen_path() -> None:
    """Vertex 1 (token 4) is a slightly likelier next stop than vertex 2 (token 5); the LM after 3 prefers 5."""
    neg = float("-inf")
    links = torch.full((1, 4, 4), neg)
    links[0, 0, 1], links[0, 0, 2] = torch.tensor([0.55, 0.45]).log()
    links[0, 1, 3] = links[0, 2, 3] = 0.0
    logp = torch.full((1, 4, 6), -10.0)
    for v, tok in enumerate([3, 4, 5, 2]):
        logp[0, v, tok] = -0.01
    length = torch.tensor([4])
    lm = bigram_log_probs([[3, 5, 2], [3, 5, 2], [3, 4, 2]], 6)
    plain, _ = dag_beam_decode(links, logp, length, beam_size=2, pad=0)
    with_lm, _ = dag_beam_decode(links, logp, length, beam_size=2, bigram=lm, lm_weight=1.0, pad=0)
    assert plain.tolist() == [[3, 4, 2]]
    assert with_lm.tolist() == [[3, 5, 2]]
    with pytest.raises(TextInputError, match="bigram table"):
        dag_beam_decode(links, logp, length, bigram=torch.zeros(3, 3), lm_weight=1.0)
    with pytest.raises(TextInputError, match="beam_size"):
        dag_beam_decode(links, logp, length, beam_size=0)


def test_shipped_dat_translates_with_beam_search() -> None:
    """The shipped sort DA-Transformer: beam 4 is as accurate as lookahead on held-out sorting."""
    from genloom.text.pretrained import load_text_model
    from genloom.text.tasks import Seq2SeqTask

    model, _, _ = load_text_model("text-sort-dat")
    task = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=8)
    batch = task.sample(100, generator=torch.Generator().manual_seed(11))
    beam = model.translate(batch.source, batch.source_length, strategy="beam", beam_size=4).tokens
    look = model.translate(batch.source, batch.source_length, strategy="lookahead").tokens
    assert (
        task.accuracy(batch, beam) >= 0.95 and task.accuracy(batch, beam) >= task.accuracy(batch, look) - 0.02
    )
    merged = model.translate(
        batch.source, batch.source_length, strategy="beam", beam_size=4, merge_prefixes=True
    ).tokens
    assert task.accuracy(batch, merged) >= 0.95
    with pytest.raises(TextInputError, match="beam"):
        model.translate(batch.source, batch.source_length, strategy="nucleus")


def test_sparse_bigram_counts_give_the_dense_table() -> None:
    from genloom.text.dag_beam import bigram_counts, bigram_log_probs_from_counts

    sequences = [[0, 1, 2, 1, 2], [2, 2, 3], [4], []]
    counts = bigram_counts(sequences, 5)
    assert sorted(zip(counts["previous"].tolist(), counts["next"].tolist(), counts["count"].tolist())) == [
        (0, 1, 1), (1, 2, 2), (2, 1, 1), (2, 2, 1), (2, 3, 1)
    ]  # fmt: skip
    dense = torch.full((5, 5), 0.1)
    for seq in sequences:
        for a, b in zip(seq, seq[1:]):
            dense[a, b] += 1
    expected = (dense / dense.sum(-1, keepdim=True)).log()
    torch.testing.assert_close(bigram_log_probs_from_counts(counts, 5), expected)
    with pytest.raises(TextInputError, match="token ids must lie in"):
        bigram_counts([[0, 7]], 5)
    with pytest.raises(TextInputError, match="lack"):
        bigram_log_probs_from_counts({"previous": counts["previous"]}, 5)


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_width_beam_reads_nothing_and_finds_the_same_tokens(seed, merge) -> None:
    links, logp, length = _graph(seed=seed, vertices=9, vocab=5)
    bigram = torch.randn(5, 5, generator=torch.Generator().manual_seed(seed)).log_softmax(-1)
    options = dict(beam_size=3, pad=0, bigram=bigram, lm_weight=0.5, length_alpha=1.0, merge_prefixes=merge)
    tokens, path = dag_beam_decode(links, logp, length, **options)
    fixed_tokens, fixed_path = dag_beam_decode(links, logp, length, fixed_width=True, **options)
    assert torch.equal(fixed_path, path) and fixed_tokens.shape == (3, 9)
    assert (
        torch.equal(fixed_tokens[:, : tokens.shape[1]], tokens)
        and (fixed_tokens[:, tokens.shape[1] :] == 0).all()
    )


@pytest.mark.parametrize("joint", [False, True])
def test_viterbi_with_a_bigram_lm_is_viterbi_on_shifted_links_and_fixed_width_reads_nothing(joint) -> None:
    from genloom.text.dag import dag_viterbi_decode

    links, logp, length = _graph(seed=3, vertices=9, vocab=5)
    bigram = torch.randn(5, 5, generator=torch.Generator().manual_seed(4)).log_softmax(-1)
    options = dict(upsample_scale=1.0, joint=joint, pad=0)
    tokens, path = dag_viterbi_decode(links, logp, length, bigram=bigram, lm_weight=0.7, **options)
    best = logp.argmax(-1)
    shifted = links + 0.7 * bigram[best.unsqueeze(-1), best.unsqueeze(-2)]
    ref_tokens, ref_path = dag_viterbi_decode(shifted, logp, length, **options)
    assert torch.equal(tokens, ref_tokens) and torch.equal(path, ref_path)
    plain_tokens, plain_path = dag_viterbi_decode(links, logp, length, **options)
    assert not torch.equal(plain_path, path)  # the LM (weight 0.7) changes some path
    fixed, fixed_path = dag_viterbi_decode(
        links, logp, length, bigram=bigram, lm_weight=0.7, fixed_width=True, **options
    )
    assert torch.equal(fixed_path, path) and fixed.shape[1] == path.shape[1]
    assert torch.equal(fixed[:, : tokens.shape[1]], tokens) and (fixed[:, tokens.shape[1] :] == 0).all()


@pytest.mark.parametrize("num_steps", [1, 2, 5, 8, 13])
def test_binary_lifting_follows_backpointers_as_the_walk_back_does(num_steps) -> None:
    from genloom.text.viterbi_ops import follow_backpointers_reference

    g = torch.Generator().manual_seed(num_steps)
    batch, vertices = 6, 7
    backpointers = torch.randint(0, vertices, (num_steps - 1, batch, vertices), generator=g)
    last = torch.randint(0, vertices, (batch,), generator=g)
    emitted = torch.randint(1, num_steps + 1, (batch,), generator=g)
    emitted[0], emitted[-1] = 1, num_steps  # the shortest and the longest path
    expected = torch.full((batch, num_steps), -1)
    for b in range(batch):
        vertex = int(last[b])
        for step in range(int(emitted[b]) - 1, -1, -1):
            if step < int(emitted[b]) - 1:
                vertex = int(backpointers[step][b, vertex])
            expected[b, step] = vertex
    assert torch.equal(follow_backpointers_reference(backpointers, last, emitted, num_steps), expected)


def _brute_force_best_sequence(links, logp, n, pad, collapse):
    """The token sequence with the largest total probability over every path that emits it (no length
    normalisation), each vertex emitting its most likely token: log-sum-exp over paths, then argmax."""
    best_logp, best_token = logp.max(-1)
    totals: dict[tuple, list[float]] = {}
    for size in range(2, n + 1):
        for middle in itertools.combinations(range(1, n - 1), size - 2):
            path = (0, *middle, n - 1)
            score = sum(links[a, b].item() for a, b in zip(path, path[1:])) + sum(
                best_logp[v].item() for v in path
            )
            tokens = [int(best_token[0])]
            for u, v in zip(path, path[1:]):
                t = int(best_token[v])
                if t != pad and not (collapse and t == int(best_token[u])):
                    tokens.append(t)
            totals.setdefault(tuple(tokens), []).append(score)
    merged = {seq: torch.tensor(scores).logsumexp(0).item() for seq, scores in totals.items()}
    return max(merged, key=merged.get)


@pytest.mark.parametrize(
    ("seed", "vocab", "collapse"), [(2, 3, False), (3, 3, True), (28, 2, False), (8, 2, True)]
)
def test_merged_wide_beam_finds_the_likeliest_translation_over_all_paths(seed, vocab, collapse) -> None:
    # few tokens over 8 vertices: many paths emit the same sequence, and a full-width merged beam sums them;
    # in each of these graphs one row's likeliest translation is not the best single path's (unmerged: wrong)
    links, logp, length = _graph(seed=seed, vertices=8, vocab=vocab)
    for merge in (True, False):
        tokens, _ = dag_beam_decode(
            links, logp, length, beam_size=128, pad=0, collapse_repeats=collapse, merge_prefixes=merge
        )
        found = []
        for b in range(3):
            want = _brute_force_best_sequence(links[b], logp[b], int(length[b]), 0, collapse)
            found.append(tuple(t for t in tokens[b].tolist() if t != 0) == tuple(t for t in want if t != 0))
        assert all(found) == merge, (merge, found)


def test_merging_sums_the_paths_of_one_translation() -> None:
    """Two paths emit "A" with probability 0.3 each, one path emits "B" with 0.4: the best single path says
    "B", the sum over paths says "A"."""
    bos, a, b, eos, pad = 2, 3, 4, 5, 0
    links = torch.full((1, 5, 5), float("-inf"))
    links[0, 0, 1:4] = torch.tensor([0.3, 0.3, 0.4]).log()
    links[0, 1:4, 4] = 0.0
    logp = torch.full((1, 5, 6), -20.0)
    for vertex, token in enumerate((bos, a, a, b, eos)):
        logp[0, vertex, token] = 0.0
    length = torch.tensor([5])
    single, _ = dag_beam_decode(links, logp, length, beam_size=4, pad=pad)
    summed, _ = dag_beam_decode(links, logp, length, beam_size=4, pad=pad, merge_prefixes=True)
    assert single[0, :3].tolist() == [bos, b, eos]
    assert summed[0, :3].tolist() == [bos, a, eos]
