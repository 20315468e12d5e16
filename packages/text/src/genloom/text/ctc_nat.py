"""CTC for non-autoregressive translation (Libovicky & Helcl 2018; Gu & Kong 2021 with GLAT).

The decoder reads `upsample_ratio x source length` positions and emits tokens or a blank; the CTC loss
(`torch.nn.functional.ctc_loss`) sums over every alignment that collapses to the target. The best
(Viterbi) alignment feeds glancing training. Decoding (collapse repeats, drop blanks) is the shared CTC
decoder's job; here only the training side lives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genloom.text.errors import GraphTooSmallError, TextInputError

NEG_INF = float("-inf")


def upsampled_length(source_length: Tensor, ratio: float, *, max_length: int | None = None) -> Tensor:
    """Decoder length for CTC / DAG decoders: ceil(ratio x source length), at least 2, optionally capped."""
    if ratio <= 0:
        raise TextInputError(f"upsample ratio must be > 0, got {ratio}")
    length = torch.ceil(source_length.float() * ratio).long().clamp(min=2)
    return length if max_length is None else length.clamp(max=max_length)


def ctc_min_input_length(targets: Tensor, target_length: Tensor) -> Tensor:
    """Frames CTC needs for each target: its length plus one blank between each pair of equal neighbours."""
    positions = torch.arange(targets.shape[1], device=targets.device).unsqueeze(0)
    repeats = (targets[:, 1:] == targets[:, :-1]) & (positions[:, 1:] < target_length.unsqueeze(1))
    return target_length + repeats.sum(1)


def ctc_nat_loss(
    logits: Tensor, input_length: Tensor, targets: Tensor, target_length: Tensor, *, blank: int
) -> Tensor:
    """Mean over rows of -log P_ctc(Y | X) / |Y| (float32). logits [B, L, V], targets [B, T]."""
    needed = ctc_min_input_length(targets, target_length)
    too_short = needed > input_length
    if too_short.any():
        rows = too_short.nonzero().flatten().tolist()
        raise GraphTooSmallError(
            f"CTC input too short in rows {rows}: {input_length[too_short].tolist()} frames for targets that need "
            f"{needed[too_short].tolist()} (target length + repeated neighbours); raise the upsampling ratio"
        )
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [L, B, V]
    nll = F.ctc_loss(log_probs, targets, input_length, target_length, blank=blank, reduction="none")
    return (nll / target_length.float()).mean()


@torch.no_grad()
def ctc_best_alignment(
    log_probs: Tensor, input_length: Tensor, targets: Tensor, target_length: Tensor, *, blank: int
) -> tuple[Tensor, Tensor]:
    """Viterbi CTC alignment. Returns (frame -> target index [B, L], -1 on blank frames; best path log-prob [B]).

    Dynamic programme over the blank-extended label sequence, looping over frames, batched over rows.
    """
    batch, num_frames, _ = log_probs.shape
    num_states = 2 * targets.shape[1] + 1
    rows = torch.arange(batch, device=log_probs.device)
    extended = torch.full((batch, num_states), blank, dtype=torch.long, device=log_probs.device)
    extended[:, 1::2] = targets
    previous_label = torch.cat([torch.full_like(extended[:, :2], -1), extended[:, :-2]], dim=1)
    can_skip = (extended != blank) & (extended != previous_label)
    emit = log_probs.float().gather(2, extended.unsqueeze(1).expand(-1, num_frames, -1))  # [B, L, S]
    alpha = torch.full((batch, num_states), NEG_INF, device=log_probs.device)
    alpha[:, :2] = emit[:, 0, :2]
    backpointers = []
    shifted_inf = torch.full((batch, 1), NEG_INF, device=log_probs.device)
    for t in range(1, num_frames):
        stay = alpha
        step = torch.cat([shifted_inf, alpha[:, :-1]], dim=1)
        skip = torch.cat([shifted_inf, shifted_inf, alpha[:, :-2]], dim=1).masked_fill(~can_skip, NEG_INF)
        best, choice = torch.stack([stay, step, skip], dim=-1).max(dim=-1)
        new_alpha = best + emit[:, t]
        active = (t < input_length).unsqueeze(1)
        alpha = torch.where(active, new_alpha, alpha)
        backpointers.append(torch.where(active, choice, torch.zeros_like(choice)))
    last_state = 2 * target_length
    end_scores = torch.stack([alpha[rows, last_state], alpha[rows, last_state - 1]], dim=1)
    score, end_choice = end_scores.max(dim=1)
    state = last_state - end_choice
    frame_target = torch.full((batch, num_frames), -1, dtype=torch.long, device=log_probs.device)
    for t in range(num_frames - 1, -1, -1):
        on_path = t < input_length
        if t < num_frames - 1:
            moved = state - backpointers[t].gather(1, state.unsqueeze(1)).squeeze(1)
            state = torch.where(t < input_length - 1, moved, state)
        label_index = torch.where(state % 2 == 1, (state - 1) // 2, -1)
        frame_target[:, t] = torch.where(on_path, label_index, -1)
    return frame_target, score
