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


def upsampled_width(width: int, ratio: float, *, max_length: int | None = None) -> int:
    """`upsampled_length` of one width, as a host int: what a padded batch of that width decodes into.

    A ratio that is a multiple of 1/1024 (4, 3, 1.5, ...) is applied in integer arithmetic, which stays
    symbolic when the width is (a pass compiled once for every padded width); float32 products of such a
    ratio are exact, so the result equals `upsampled_length`'s. Other ratios go through it on the host."""
    if ratio <= 0:
        raise TextInputError(f"upsample ratio must be > 0, got {ratio}")
    scaled = float(ratio) * 1024
    if scaled.is_integer():
        length = torch.sym_max(-(-(width * int(scaled)) // 1024), 2)
    else:
        length = int(upsampled_length(torch.tensor([int(width)]), ratio)[0])
    return length if max_length is None else torch.sym_min(length, max_length)


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
    device = log_probs.device
    rows = torch.arange(batch, device=device)
    extended = torch.full((batch, num_states), blank, dtype=torch.long, device=device)
    extended[:, 1::2] = targets
    previous_label = torch.cat([torch.full_like(extended[:, :2], -1), extended[:, :-2]], dim=1)
    can_skip = (extended != blank) & (extended != previous_label)
    # 0 where a state may be entered by skipping a blank, -inf where not (added, it masks exactly)
    skip_bias = torch.zeros(batch, num_states, device=device).masked_fill(~can_skip, NEG_INF)[:, 2:]
    emit = log_probs.float().gather(2, extended.unsqueeze(1).expand(-1, num_frames, -1))  # [B, L, S]
    frames = torch.arange(num_frames, device=device)
    active = (frames.unsqueeze(0) < input_length.unsqueeze(1)).unsqueeze(-1)  # [B, L, 1]
    alpha = torch.full((batch, num_states), NEG_INF, device=device)
    alpha[:, :2] = emit[:, 0, :2]
    # the three predecessors of every state (stay, step from s-1, skip from s-2) in one preallocated
    # buffer; its never-written entries stay -inf. Per frame: three copies, one max, one add, one select.
    moves = torch.full((batch, num_states, 3), NEG_INF, device=device)
    backpointers = []
    for t in range(1, num_frames):
        moves[:, :, 0] = alpha
        moves[:, 1:, 1] = alpha[:, :-1]
        torch.add(alpha[:, :-2], skip_bias, out=moves[:, 2:, 2])
        best, choice = moves.max(dim=-1)
        alpha = torch.where(active[:, t], best + emit[:, t], alpha)
        backpointers.append(choice)  # read back only on frames before a row's last one
    last_state = 2 * target_length
    end_scores = torch.stack([alpha[rows, last_state], alpha[rows, last_state - 1]], dim=1)
    score, end_choice = end_scores.max(dim=1)
    state = last_state - end_choice
    moving = frames.unsqueeze(0) < (input_length - 1).unsqueeze(1)  # [B, L]
    states = [state]
    for t in range(num_frames - 2, -1, -1):
        moved = state - backpointers[t].gather(1, state.unsqueeze(1)).squeeze(1)
        state = torch.where(moving[:, t], moved, state)
        states.append(state)
    state_path = torch.stack(states[::-1], dim=1)  # [B, L]: the state of every frame
    label_index = torch.where(state_path % 2 == 1, (state_path - 1) // 2, -1)
    frame_target = torch.where(active.squeeze(-1), label_index, -1)
    return frame_target, score
