"""DAG algorithms on small graphs checked against brute-force enumeration of every path."""

import itertools
import math

import pytest
import torch

from genloom.text.dag import (
    DagLinkHead,
    dag_best_alignment,
    dag_log_likelihood,
    dag_lookahead_decode,
    dag_loss,
    dag_match,
    dag_viterbi_decode,
)
from genloom.text.errors import GraphTooSmallError, TextInputError


def _random_graph(batch=3, vertices=6, targets=4, vocab=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    head = DagLinkHead(dim=8, num_heads=2)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    output_length = torch.tensor([vertices, vertices - 1, 4])[:batch]
    target_length = torch.tensor([targets, targets - 1, 2])[:batch]
    links = head(torch.randn(batch, vertices, 8, generator=g), output_length).double().detach()
    logits = torch.randn(batch, vertices, vocab, generator=g).double()
    tgt = torch.randint(0, vocab, (batch, targets), generator=g)
    return links, logits, tgt, output_length, target_length


def _paths(num_vertices, num_tokens):
    """Every increasing vertex sequence from 0 to num_vertices-1 of length num_tokens."""
    for middle in itertools.combinations(range(1, num_vertices - 1), num_tokens - 2):
        yield (0, *middle, num_vertices - 1)


def test_links_are_forward_only_distributions():
    links, *_, output_length, _ = _random_graph()
    for b, n in enumerate(output_length.tolist()):
        rows = links[b, : n - 1, :n].exp().sum(-1)
        torch.testing.assert_close(rows, torch.ones_like(rows))
        lower = torch.ones(links.shape[1], links.shape[1], dtype=torch.bool).tril()
        assert torch.isneginf(links[b][lower]).all()
        assert torch.isneginf(links[b, :, n:]).all() and torch.isneginf(links[b, n - 1]).all()


def test_likelihood_and_alignment_equal_brute_force():
    links, logits, tgt, output_length, target_length = _random_graph()
    match = dag_match(logits, tgt)
    logprob = dag_log_likelihood(match, links, output_length, target_length)
    path, best = dag_best_alignment(match, links, output_length, target_length)
    for b in range(3):
        n, t = output_length[b].item(), target_length[b].item()
        scored = []
        for vs in _paths(n, t):
            s = sum(match[b, k, v].item() for k, v in enumerate(vs))
            s += sum(links[b, vs[k], vs[k + 1]].item() for k in range(t - 1))
            scored.append((s, vs))
        assert logprob[b].item() == pytest.approx(math.log(sum(math.exp(s) for s, _ in scored)), abs=1e-9)
        best_score, best_path = max(scored)
        assert best[b].item() == pytest.approx(best_score, abs=1e-9)
        expected = [-1] * links.shape[1]
        for k, v in enumerate(best_path):
            expected[v] = k
        assert path[b].tolist() == expected


def test_dag_loss_gradient_is_finite_and_matches_finite_differences():
    links, logits, tgt, output_length, target_length = _random_graph(batch=2, vertices=5, targets=3, seed=3)
    logits.requires_grad_()
    torch.autograd.gradcheck(
        lambda x: dag_loss(x, links, tgt, output_length, target_length),
        (logits,),
        eps=1e-6,
        atol=1e-5,
        fast_mode=True,
    )
    links = links.clone().requires_grad_()
    dag_loss(logits, links, tgt, output_length, target_length).backward()
    assert torch.isfinite(links.grad).all()
    assert (links.grad[torch.isneginf(links)] == 0).all()


def test_graph_too_small_is_a_clear_error():
    links, logits, tgt, _, _ = _random_graph()
    with pytest.raises(GraphTooSmallError, match="graph too small"):
        dag_loss(logits, links, tgt, torch.tensor([6, 3, 4]), torch.tensor([4, 4, 2]))
    with pytest.raises(TextInputError, match="output_length must lie"):
        dag_loss(logits, links, tgt, torch.tensor([7, 6, 4]), torch.tensor([4, 3, 2]))


def test_decoders_follow_a_deterministic_chain():
    # vertex i jumps to i+2 with near certainty; vertex tokens 10, 11, ... ; vertex 2 repeats vertex 0's token
    n, vocab = 7, 20
    links = torch.full((1, n, n), -30.0)
    links = links.masked_fill(~torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    for i in range(0, n - 2, 2):
        links[0, i, i + 2] = 0.0
    links[0, n - 1] = float("-inf")
    logp = torch.full((1, n, vocab), -20.0)
    tokens = [10, 11, 10, 13, 14, 15, 16]
    for i, tok in enumerate(tokens):
        logp[0, i, tok] = 0.0
    out, path = dag_lookahead_decode(links, logp, torch.tensor([n]), beta=None)
    assert path[0].tolist()[:4] == [0, 2, 4, 6]
    assert out[0].tolist() == [10, 14, 16]  # the repeated 10 at vertex 2 collapses
    out, _ = dag_lookahead_decode(links, logp, torch.tensor([n]), beta=1.0)
    assert out[0].tolist() == [10, 14, 16]
    # Viterbi emits neither vertex 0 nor the last vertex (official behaviour: they carry bos / eos)
    out, path = dag_viterbi_decode(links, logp, torch.tensor([n]), upsample_scale=1.0)
    assert path[0].tolist()[:3] == [2, 4, -1] and out[0].tolist() == [10, 14]


def test_follow_jumps_equals_a_walk():
    from genloom.text.dag import follow_jumps

    g = torch.Generator().manual_seed(0)
    batch, n = 64, 37
    output_length = torch.randint(1, n + 1, (batch,), generator=g)
    # random forward jumps inside each graph
    low = torch.arange(n).unsqueeze(0) + 1
    high = output_length.unsqueeze(1).clamp(min=1)
    jumps = (low + (torch.rand(batch, n, generator=g) * (high - low).clamp(min=0)).long()).clamp(max=n - 1)
    path = follow_jumps(jumps, output_length)
    for b in range(batch):
        walk, vertex = [0], 0
        while vertex != output_length[b] - 1:
            vertex = int(jumps[b, vertex])
            walk.append(vertex)
        assert path[b].tolist() == walk + [-1] * (n - len(walk))
