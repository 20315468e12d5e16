"""Glancing sampler and CTC training pieces: schedule, reveal counts, CTC Viterbi alignment vs brute force."""

import itertools
import math

import pytest
import torch

from genloom.text.ctc_nat import ctc_best_alignment, ctc_min_input_length, ctc_nat_loss, upsampled_length
from genloom.text.errors import GraphTooSmallError, TextInputError
from genloom.text.glat import GlanceSchedule, aligned_glance_inputs, glancing_mask


def test_glance_schedule_anneals_linearly_then_holds():
    schedule = GlanceSchedule(start=0.5, end=0.1, anneal_steps=100)
    assert schedule.ratio(0) == 0.5
    assert schedule.ratio(50) == pytest.approx(0.3)
    assert schedule.ratio(100) == pytest.approx(0.1) and schedule.ratio(10_000) == pytest.approx(0.1)
    with pytest.raises(TextInputError):
        GlanceSchedule(start=1.5)


def test_glancing_mask_reveals_ratio_of_wrong_tokens_among_valid_positions():
    g = torch.Generator().manual_seed(0)
    valid = torch.arange(10).unsqueeze(0) < torch.tensor([[10], [6], [4]])
    correct = torch.zeros(3, 10, dtype=torch.bool)
    correct[1, :2] = True  # 4 wrong of 6
    correct[2, :4] = True  # all right
    mask = glancing_mask(correct, valid, 0.5, generator=g)
    assert mask.sum(1).tolist() == [5, 2, 0]
    assert not (mask & ~valid).any()
    # uniform over positions: each of 10 positions gets revealed about half the time
    many = torch.stack([glancing_mask(correct[:1], valid[:1], 0.5, generator=g) for _ in range(400)])
    assert many.float().mean(0).sub(0.5).abs().max() < 0.1


def test_aligned_glance_inputs_write_targets_at_aligned_positions():
    decoder = torch.full((1, 6), 3)
    alignment = torch.tensor([[0, -1, 1, -1, 2, 3]])
    targets = torch.tensor([[10, 11, 12, 13]])
    reveal = torch.tensor([[True, False, True, False]])
    tokens, revealed = aligned_glance_inputs(decoder, alignment, targets, reveal)
    assert tokens.tolist() == [[10, 3, 3, 3, 12, 3]]
    assert revealed.tolist() == [[True, False, False, False, True, False]]


def test_upsampled_length_and_ctc_needs():
    assert upsampled_length(torch.tensor([1, 3, 10]), 2.0).tolist() == [2, 6, 20]
    assert upsampled_length(torch.tensor([10]), 3.0, max_length=16).tolist() == [16]
    targets = torch.tensor([[5, 5, 6, 6, 0], [5, 6, 7, 0, 0]])
    assert ctc_min_input_length(targets, torch.tensor([4, 3])).tolist() == [6, 3]


def test_ctc_loss_rejects_too_short_inputs():
    logits = torch.randn(1, 3, 8)
    with pytest.raises(GraphTooSmallError, match="CTC input too short"):
        ctc_nat_loss(logits, torch.tensor([3]), torch.tensor([[5, 5, 6]]), torch.tensor([3]), blank=0)


def _collapse(labels, blank):
    out = []
    previous = None
    for x in labels:
        if x != previous and x != blank:
            out.append(x)
        previous = x
    return out


def test_ctc_alignment_is_the_best_path_and_loss_sums_all_paths():
    g = torch.Generator().manual_seed(1)
    vocab, blank = 4, 0
    log_probs = torch.randn(2, 5, vocab, generator=g).double().log_softmax(-1)
    targets = torch.tensor([[1, 1, 2], [3, 2, 0]])
    target_length, input_length = torch.tensor([3, 2]), torch.tensor([5, 4])
    frame_target, score = ctc_best_alignment(log_probs, input_length, targets, target_length, blank=blank)
    loss = ctc_nat_loss(log_probs, input_length, targets, target_length, blank=blank)
    total_nll = 0.0
    for b in range(2):
        n, want = input_length[b].item(), targets[b, : target_length[b]].tolist()
        scored = []
        for labels in itertools.product(range(vocab), repeat=n):
            if _collapse(labels, blank) == want:
                scored.append((sum(log_probs[b, t, x].item() for t, x in enumerate(labels)), labels))
        best, labels = max(scored)
        assert score[b].item() == pytest.approx(best, abs=1e-6)
        # the alignment's frames name the target index on label frames, -1 on blanks / padding
        emitted = [want[i] if i >= 0 else blank for i in frame_target[b, :n].tolist()]
        assert tuple(emitted) == labels and (frame_target[b, n:] == -1).all()
        total_nll += -math.log(sum(math.exp(s) for s, _ in scored)) / len(want)
    assert loss.item() == pytest.approx(total_nll / 2, abs=1e-5)
