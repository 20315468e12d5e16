"""CTC decoding: collapse rules, greedy decoding, and prefix beam search against brute-force enumeration."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import pytest
import torch

from genloom.core.sampling.ctc import ctc_collapse, ctc_greedy_decode, ctc_prefix_beam_search
from genloom.core.sampling.errors import SamplingError


def _collapse(alignment: tuple[int, ...], blank: int) -> tuple[int, ...]:
    out, prev = [], None
    for c in alignment:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return tuple(out)


def _brute_force(log_probs: torch.Tensor, blank: int) -> dict[tuple[int, ...], float]:
    frames, vocab = log_probs.shape
    totals: dict[tuple[int, ...], float] = defaultdict(float)
    for alignment in itertools.product(range(vocab), repeat=frames):
        totals[_collapse(alignment, blank)] += math.exp(
            sum(log_probs[t, c].item() for t, c in enumerate(alignment))
        )
    return totals


def test_collapse_merges_repeats_then_drops_blanks() -> None:
    ids = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0], [0, 3, 3, 3, 0, 3, 1, 1]])
    labels, counts = ctc_collapse(ids, blank=0, lengths=torch.tensor([8, 6]))
    assert counts.tolist() == [3, 2]
    assert labels[0, :3].tolist() == [1, 1, 2] and labels[1, :2].tolist() == [3, 3]
    assert (labels[0, 3:] == -1).all() and (labels[1, 2:] == -1).all()


def test_greedy_decode_reads_the_best_path() -> None:
    path = torch.tensor([[2, 2, 0, 2, 1], [1, 0, 0, 0, 0]])
    log_probs = torch.nn.functional.one_hot(path, 3).float().mul(5).log_softmax(-1)
    assert ctc_greedy_decode(log_probs) == [[2, 2, 1], [1]]
    assert ctc_greedy_decode(log_probs, blank=2) == [[0, 1], [1, 0]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_with_a_large_beam_is_exact(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    log_probs = (torch.randn(2, 5, 3, generator=g) * 1.5).log_softmax(-1)
    results = ctc_prefix_beam_search(log_probs, beam_width=1000, blank=0)
    for b in range(2):
        truth = _brute_force(log_probs[b], blank=0)
        best = max(truth, key=truth.get)
        labels, score = results[b][0]
        assert tuple(labels) == best
        assert score == pytest.approx(math.log(truth[best]), rel=1e-6)
        # every returned hypothesis carries its exact probability, and they cover all label sequences
        assert len(results[b]) == len(truth)
        for labels, score in results[b]:
            assert score == pytest.approx(math.log(truth[tuple(labels)]), rel=1e-6)


def test_beam_search_can_beat_greedy() -> None:
    # Greedy reads blank,blank but the label "1" has more total mass over its alignments.
    probs = torch.tensor([[[0.55, 0.45, 0.0], [0.55, 0.45, 0.0]]]).clamp_min(1e-9)
    log_probs = probs.log()
    assert ctc_greedy_decode(log_probs) == [[]]
    # P("") = 0.3025, P("1") = 0.45*0.45 + 2*0.45*0.55 = 0.6975
    best, score = ctc_prefix_beam_search(log_probs, beam_width=4)[0][0]
    assert best == [1] and score == pytest.approx(math.log(0.6975), rel=1e-4)


def test_beam_search_respects_lengths_and_candidates() -> None:
    g = torch.Generator().manual_seed(4)
    log_probs = torch.randn(2, 6, 4, generator=g).log_softmax(-1)
    short = ctc_prefix_beam_search(log_probs, beam_width=500, lengths=torch.tensor([6, 3]))
    truth = _brute_force(log_probs[1, :3], blank=0)
    assert tuple(short[1][0][0]) == max(truth, key=truth.get)
    pruned = ctc_prefix_beam_search(log_probs, beam_width=3, candidates_per_frame=2)
    assert all(len(row) <= 3 for row in pruned)
    assert all(row[i][1] >= row[i + 1][1] for row in pruned for i in range(len(row) - 1))


def test_ctc_errors() -> None:
    with pytest.raises(SamplingError, match=r"\[B, T, V\]"):
        ctc_greedy_decode(torch.zeros(4, 3))
    with pytest.raises(SamplingError, match="beam_width"):
        ctc_prefix_beam_search(torch.zeros(1, 2, 3), beam_width=0)
    with pytest.raises(SamplingError, match="blank"):
        ctc_prefix_beam_search(torch.zeros(1, 2, 3), blank=3)
    with pytest.raises(SamplingError, match="lengths"):
        ctc_collapse(torch.zeros(2, 3, dtype=torch.long), lengths=torch.tensor([1]))


def test_prefix_beam_search_with_a_bigram_lm_adds_its_scores_and_can_change_the_labels() -> None:
    from genloom.core.sampling.ctc import ctc_prefix_beam_search

    # two frames over {blank 0, 1, 2}: the acoustics prefer label 1 a little, the LM strongly prefers 2 after
    # the start symbol (context 0 here)
    frames = torch.tensor([[[0.1, 0.5, 0.4], [0.8, 0.1, 0.1]]]).log()
    plain = ctc_prefix_beam_search(frames, beam_width=4)[0]
    assert plain[0][0] == [1]
    lm = torch.full((3, 3), -5.0)
    lm[0, 2] = 0.0
    fused = ctc_prefix_beam_search(frames, beam_width=4, lm=lm, lm_start=0, lm_weight=1.0, length_bonus=0.25)[
        0
    ]
    assert fused[0][0] == [2]
    scores = {tuple(labels): score for labels, score in plain}
    expected = scores[(2,)] + 1.0 * 0.0 + 0.25  # CTC log-prob + weighted LM log-prob + bonus per label
    assert dict((tuple(labels), score) for labels, score in fused)[(2,)] == pytest.approx(expected)
    with pytest.raises(SamplingError, match="bigram table"):
        ctc_prefix_beam_search(frames, lm=torch.zeros(2, 2), lm_weight=1.0)


@pytest.mark.parametrize(("vocab", "blank", "candidates"), [(6, 0, 4), (6, 5, 3), (4, 0, 8)])
def test_batched_beam_search_equals_the_host_prefix_beam_search(
    vocab: int, blank: int, candidates: int
) -> None:
    # float64 on the CPU: the same best prefix and score as the host search, for every row, with and without
    # the bigram LM and length bonus; small vocabularies make merges (an extension equal to another beam's
    # prefix) frequent, and some rows end early or have no frame at all
    from genloom.core.sampling.ctc import ctc_beam_search_batched

    g = torch.Generator().manual_seed(vocab + blank)
    lm = torch.randn(vocab, vocab, generator=g, dtype=torch.float64).log_softmax(-1)
    for _ in range(10):
        log_probs = (torch.randn(5, 12, vocab, generator=g, dtype=torch.float64) * 2).log_softmax(-1)
        lengths = torch.randint(0, 13, (5,), generator=g)
        for fusion in ({}, {"lm": lm, "lm_weight": 0.7, "length_bonus": 0.4, "lm_start": 1}):
            options = dict(
                beam_width=4, blank=blank, lengths=lengths, candidates_per_frame=candidates, **fusion
            )
            expected = ctc_prefix_beam_search(log_probs, **options)
            labels, counts, scores = ctc_beam_search_batched(log_probs, **options)
            for row, found in enumerate(expected):
                best, best_score = found[0]
                assert labels[row, : counts[row]].tolist() == best
                assert (labels[row, counts[row] :] == -1).all()
                assert float(scores[row]) == pytest.approx(best_score, abs=1e-9)


def test_batched_beam_search_reads_nothing_from_the_device_and_checks_its_input() -> None:
    from genloom.core.nn.capture_check import check_capturable
    from genloom.core.sampling.ctc import ctc_beam_search_batched

    log_probs = torch.empty(2, 7, 9, device="meta")
    lm = torch.empty(9, 9, device="meta")
    labels, counts, scores = check_capturable(
        ctc_beam_search_batched, log_probs, lengths=torch.empty(2, dtype=torch.long, device="meta"), lm=lm,
        lm_weight=0.5, beam_width=3, candidates_per_frame=4,
    )  # fmt: skip
    assert labels.shape == (2, 7) and counts.shape == (2,) and scores.shape == (2,)
    with pytest.raises(SamplingError, match="bigram table"):
        ctc_beam_search_batched(torch.zeros(1, 3, 5), lm=torch.zeros(4, 4), lm_weight=1.0)
    with pytest.raises(SamplingError, match="beam_width"):
        ctc_beam_search_batched(torch.zeros(1, 3, 5), beam_width=0)


CTC_KERNEL_CHECK = """
import torch

from genloom.core.sampling.ctc import ctc_beam_search_batched
from genloom.core.sampling.ctc_kernels import ctc_beam_search_triton

g = torch.Generator().manual_seed(1)
# (batch, frames, vocab, beam, candidates, blank): two pad blocks, a beam of 2, more candidates than symbols,
# blank last, no frame at all, fewer live candidates than beams
cases = [(4, 10, 6, 4, 4, 0), (3, 70, 9, 8, 8, 8), (2, 15, 5, 2, 8, 0), (1, 0, 5, 4, 4, 0), (2, 12, 3, 8, 8, 0)]
for batch, frames, vocab, beam, k, blank in cases:
    log_probs = (torch.randn(batch, frames, vocab, generator=g) * 2).log_softmax(-1)
    lengths = torch.randint(0, frames + 1, (batch,), generator=g)
    lm = torch.randn(vocab, vocab, generator=g).log_softmax(-1)
    for fusion in ({}, {"lm": lm, "lm_weight": 0.7, "length_bonus": 0.4, "lm_start": 1}):
        expected = ctc_beam_search_batched(
            log_probs, beam_width=beam, blank=blank, lengths=lengths, candidates_per_frame=k, **fusion
        )
        labels, counts, scores = ctc_beam_search_triton(
            log_probs, lengths, fusion.get("lm"), beam, blank, k, fusion.get("lm_start", 0),
            fusion.get("lm_weight", 0.0), fusion.get("length_bonus", 0.0), -1,
        )
        assert torch.equal(labels, expected[0]) and torch.equal(counts, expected[1])
        assert torch.allclose(scores, expected[2], atol=1e-3), (scores, expected[2])
# the per-frame candidates: torch.topk's values and ids, and the lower id first among equal log-probs
from genloom.core.sampling.ctc_kernels import frame_candidates

log_probs = torch.randn(2, 5, 300, generator=g).log_softmax(-1)
log_probs[0, 0, 7] = log_probs[0, 0, 3] = log_probs[0, 0, 250] = 5.0
top_p, top_c, blank_p = frame_candidates(log_probs, 6, 2)
expected_p, expected_c = log_probs.topk(6, dim=-1)
assert torch.equal(top_p, expected_p) and torch.equal(top_c[:, :, 3:], expected_c[:, :, 3:])
assert top_c[0, 0, :3].tolist() == [3, 7, 250] and torch.equal(blank_p, log_probs[..., 2])
print("kernel equals the tensor search")
"""


def test_ctc_beam_kernel_equals_the_tensor_search_in_the_interpreter(run_triton_interpreted) -> None:
    # the Triton kernel (one program a row, beams in registers, backpointers walked at the end) on CPU tensors
    # through Triton's interpreter: the tensor search's labels and counts, scores to float32 rounding
    assert "kernel equals the tensor search" in run_triton_interpreted(CTC_KERNEL_CHECK)


@pytest.mark.gpu
def test_ctc_beam_search_op_on_cuda_equals_the_tensor_search() -> None:
    from genloom.core.sampling.ctc import ctc_beam_search_batched
    from genloom.core.sampling.ctc_kernels import ctc_beam_search

    g = torch.Generator().manual_seed(2)
    log_probs = (torch.randn(64, 40, 50, generator=g) * 3).log_softmax(-1)
    lengths = torch.randint(1, 41, (64,), generator=g)
    lm = torch.randn(50, 50, generator=g).log_softmax(-1)
    expected = ctc_beam_search_batched(
        log_probs, beam_width=8, blank=0, lengths=lengths, candidates_per_frame=8, lm=lm, lm_start=2,
        lm_weight=0.5, length_bonus=1.0,
    )  # fmt: skip
    labels, counts, scores = ctc_beam_search(
        log_probs.cuda(), lengths.cuda(), lm.cuda(), 8, 0, 8, 2, 0.5, 1.0, -1
    )
    same = (labels.cpu() == expected[0]).all(1) & (counts.cpu() == expected[1])
    assert same.float().mean() >= 0.95  # float32 rounding on another formula may reorder a near-tie
    assert torch.allclose(scores.cpu()[same], expected[2][same], atol=1e-3)


@pytest.mark.parametrize("fuse_lm", [True, False])
def test_ctc_beam_kernel_compiles_for_hopper(compile_triton_for_hopper, fuse_lm: bool) -> None:
    from genloom.core.sampling import ctc_kernels

    pointers = dict.fromkeys(["top_p", "blank_p", "lm", "out_score", "float_scratch"], "*fp32")
    pointers |= dict.fromkeys(
        ["top_c", "lengths", "back_beam", "back_label", "out_labels", "out_count", "int_scratch"], "*i64"
    )
    scalars = dict.fromkeys(["frames", "vocab", "blank", "lm_start", "pad_value"], "i32")
    scalars |= {"lm_weight": "fp32", "length_bonus": "fp32"}
    topk = compile_triton_for_hopper(
        ctc_kernels._frame_topk_kernel,
        {
            "log_probs": "*fp32",
            "top_p": "*fp32",
            "top_c": "*i64",
            "blank_p": "*fp32",
            "vocab": "i32",
            "blank": "i32",
        },
        {"K": 8, "BLOCK": 4096},
    )
    assert len(topk) > 1000
    cubin = compile_triton_for_hopper(
        ctc_kernels._ctc_beam_kernel,
        {**pointers, **scalars},
        {
            "WIDTH": 8,
            "K": 8,
            "COLS": 16,
            "FUSE_LM": fuse_lm,
            "MULT1": 1_000_003,
            "MULT2": 2_097_143,
            "MODULUS": 2**31 - 1,
        },
    )
    assert len(cubin) > 1000
