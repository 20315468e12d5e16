"""CTC decoding (Graves et al. 2006): greedy best-path decoding and prefix beam search.

A CTC model emits a distribution over the vocabulary plus a blank at every frame; a label sequence is read
off an alignment by merging repeated symbols and then dropping blanks. Greedy decoding collapses the
frame-wise argmax (on device, no host sync until the caller reads the result). Prefix beam search keeps,
for every candidate prefix, the probability of all alignments ending in a blank and in a non-blank, so with
an unlimited beam it returns the exact most probable label sequence; it runs on the host in float64.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict

import torch
from torch import Tensor

from .errors import SamplingError

__all__ = ["ctc_beam_search_batched", "ctc_collapse", "ctc_greedy_decode", "ctc_prefix_beam_search"]

_NEG_INF = float("-inf")


def _check_lengths(lengths: Tensor | None, batch: int, frames: int, device: torch.device) -> Tensor:
    if lengths is None:
        return torch.full((batch,), frames, dtype=torch.long, device=device)
    if lengths.shape != (batch,):
        raise SamplingError(f"lengths must have shape [B={batch}], got {tuple(lengths.shape)}")
    return lengths.to(device=device, dtype=torch.long)


def ctc_collapse(
    ids: Tensor, *, blank: int = 0, lengths: Tensor | None = None, pad_value: int = -1
) -> tuple[Tensor, Tensor]:
    """Merge repeats and drop blanks in frame labels `ids` [B, T]; returns (labels [B, T] left-aligned and
    padded with `pad_value`, label lengths [B]). Frames at or beyond `lengths[b]` are ignored."""
    if ids.dim() != 2:
        raise SamplingError(f"ids must have shape [B, T], got {tuple(ids.shape)}")
    batch, frames = ids.shape
    lengths = _check_lengths(lengths, batch, frames, ids.device)
    previous = torch.cat([torch.full_like(ids[:, :1], -1), ids[:, :-1]], dim=1)
    valid = torch.arange(frames, device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)
    keep = (ids != blank) & (ids != previous) & valid
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept frames first, in time order
    labels = ids.gather(1, order)
    counts = keep.sum(dim=1)
    labels = labels.masked_fill(
        torch.arange(frames, device=ids.device).unsqueeze(0) >= counts.unsqueeze(1), pad_value
    )
    return labels, counts


def ctc_greedy_decode(log_probs: Tensor, *, blank: int = 0, lengths: Tensor | None = None) -> list[list[int]]:
    """Best-path decoding of `log_probs` [B, T, V] (probabilities or logits work too): one label list per row."""
    if log_probs.dim() != 3:
        raise SamplingError(f"log_probs must have shape [B, T, V], got {tuple(log_probs.shape)}")
    labels, counts = ctc_collapse(log_probs.argmax(dim=-1), blank=blank, lengths=lengths)
    return [row[:n].tolist() for row, n in zip(labels.cpu(), counts.cpu().tolist())]


def _logaddexp(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


def _beam_search_one(
    frames: list[list[float]],
    *,
    beam_width: int,
    blank: int,
    candidates_per_frame: int | None,
    lm: Tensor | None = None,
    lm_start: int = 0,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
) -> list[tuple[list[int], float]]:
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, _NEG_INF)}  # prefix -> (blank, non-blank)
    fused: dict[tuple[int, ...], float] = {(): 0.0}  # prefix -> lm_weight * LM log-prob + bonus * length
    lm_rows: dict[int, list[float]] = {}  # the LM's rows as Python floats, read as contexts come up

    def extra(prefix: tuple[int, ...]) -> float:
        if prefix not in fused:
            step = 0.0
            if lm is not None and lm_weight:
                context = prefix[-2] if len(prefix) > 1 else lm_start
                if context not in lm_rows:
                    lm_rows[context] = lm[context].tolist()
                step = lm_weight * lm_rows[context][prefix[-1]]
            fused[prefix] = extra(prefix[:-1]) + step + length_bonus
        return fused[prefix]

    for frame in frames:
        symbols = range(len(frame))
        if candidates_per_frame is not None and candidates_per_frame < len(frame):
            symbols = sorted(symbols, key=lambda c: -frame[c])[:candidates_per_frame]
            if blank not in symbols:
                symbols = [*symbols, blank]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [_NEG_INF, _NEG_INF])
        for prefix, (p_blank, p_nonblank) in beams.items():
            p_total = _logaddexp(p_blank, p_nonblank)
            for c in symbols:
                p = frame[c]
                if p == _NEG_INF:
                    continue
                if c == blank:
                    entry = nxt[prefix]
                    entry[0] = _logaddexp(entry[0], p_total + p)
                    continue
                extended = nxt[(*prefix, c)]
                if prefix and prefix[-1] == c:
                    # a repeat only extends the prefix after a blank; otherwise it merges into it
                    extended[1] = _logaddexp(extended[1], p_blank + p)
                    same = nxt[prefix]
                    same[1] = _logaddexp(same[1], p_nonblank + p)
                else:
                    extended[1] = _logaddexp(extended[1], p_total + p)
        scored = [(prefix, entry) for prefix, entry in nxt.items() if _logaddexp(*entry) > _NEG_INF]
        ranked = sorted(scored, key=lambda item: -(_logaddexp(*item[1]) + extra(item[0])))[:beam_width]
        beams = {prefix: (pb, pnb) for prefix, (pb, pnb) in ranked}
    results = [(list(prefix), _logaddexp(pb, pnb) + extra(prefix)) for prefix, (pb, pnb) in beams.items()]
    return sorted(results, key=lambda item: -item[1])


def ctc_prefix_beam_search(
    log_probs: Tensor,
    *,
    beam_width: int = 8,
    blank: int = 0,
    lengths: Tensor | None = None,
    candidates_per_frame: int | None = None,
    lm: Tensor | None = None,
    lm_start: int = 0,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
) -> list[list[tuple[list[int], float]]]:
    """Prefix beam search over `log_probs` [B, T, V] (log-softmax output).

    Returns, per row, up to `beam_width` (labels, log probability) pairs, best first. The log probability
    sums over every alignment of that label sequence (exact when the beam never prunes it).
    `candidates_per_frame` limits the symbols tried per frame to the most likely ones (plus blank).
    Shallow fusion: with a bigram table `lm` [V, V] of log p(next | previous) (the first label's context is
    `lm_start`), prefixes rank by that log probability + lm_weight * LM log-prob + length_bonus * labels,
    and the returned scores are those sums.
    """
    if log_probs.dim() != 3:
        raise SamplingError(f"log_probs must have shape [B, T, V], got {tuple(log_probs.shape)}")
    if beam_width < 1:
        raise SamplingError(f"beam_width must be >= 1, got {beam_width}")
    batch, frames, vocab = log_probs.shape
    if not 0 <= blank < vocab:
        raise SamplingError(f"blank id {blank} is outside the vocabulary of size {vocab}")
    lengths = _check_lengths(lengths, batch, frames, torch.device("cpu"))
    if lm is not None and tuple(lm.shape) != (vocab, vocab):
        raise SamplingError(f"lm must be a [{vocab}, {vocab}] bigram table, got {tuple(lm.shape)}")
    table = log_probs.detach().to("cpu", torch.float64)
    lm_table = None if lm is None else lm.detach().to("cpu", torch.float64)
    return [
        _beam_search_one(
            table[b, : int(lengths[b])].tolist(),
            beam_width=beam_width,
            blank=blank,
            candidates_per_frame=candidates_per_frame,
            lm=lm_table,
            lm_start=lm_start,
            lm_weight=lm_weight,
            length_bonus=length_bonus,
        )
        for b in range(batch)
    ]


_HASH_MODULUS = 2_147_483_647  # 2^31 - 1: a prefix key times a multiplier below 2^22 stays inside int64
_HASH_MULTIPLIERS = (1_000_003, 2_097_143)


def _picked(
    extension: Tensor,
    same: Tensor,
    old: Tensor,
    *,
    active: Tensor,
    extended: Tensor,
    flat: Tensor,
    source: Tensor,
) -> Tensor:
    """A beam field after a frame's pick [B, W]: the picked extension's value (`extension` [B, W, k] at
    `flat`) or the source beam's same-prefix value (`same` [B, W] at `source`); `old` in rows past their end."""
    new = torch.where(extended, extension.flatten(1).gather(1, flat), same.gather(1, source))
    return torch.where(active, new, old)


def ctc_beam_search_batched(
    log_probs: Tensor,
    *,
    beam_width: int = 8,
    blank: int = 0,
    lengths: Tensor | None = None,
    candidates_per_frame: int = 8,
    lm: Tensor | None = None,
    lm_start: int = 0,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    pad_value: int = -1,
) -> tuple[Tensor, Tensor, Tensor]:
    """`ctc_prefix_beam_search` as batched tensor code on `log_probs`' device, for every row at once.

    The same search (prefixes ranked by their blank / non-blank alignment log-probs plus the shallow-fusion
    terms, the `candidates_per_frame` likeliest symbols of each frame plus blank), with fixed shapes and no
    host read, so it runs on a GPU and inside a CUDA graph. A prefix reached twice in one frame (one beam's
    extension by c equals another beam's prefix) is merged as the host search merges it, found by two
    31-bit rolling keys of the prefix plus its length and last label. Arithmetic in `log_probs`' dtype
    (float64 gives the host search's scores). Returns (best labels [B, T] padded with `pad_value`, their
    counts [B], their scores [B])."""
    if log_probs.dim() != 3:
        raise SamplingError(f"log_probs must have shape [B, T, V], got {tuple(log_probs.shape)}")
    if beam_width < 1 or candidates_per_frame < 1:
        raise SamplingError(
            f"beam_width and candidates_per_frame must be >= 1, got {beam_width} and {candidates_per_frame}"
        )
    batch, frames, vocab = log_probs.shape
    if not 0 <= blank < vocab:
        raise SamplingError(f"blank id {blank} is outside the vocabulary of size {vocab}")
    if lm is not None and tuple(lm.shape) != (vocab, vocab):
        raise SamplingError(f"lm must be a [{vocab}, {vocab}] bigram table, got {tuple(lm.shape)}")
    device, dtype = log_probs.device, log_probs.dtype
    lengths = _check_lengths(lengths, batch, frames, device)
    width, k = beam_width, min(candidates_per_frame, vocab)
    fuse_lm = lm is not None and lm_weight != 0
    lm_table = lm.to(device, dtype) if fuse_lm else None
    # the beams: labels, their count and last label, two prefix keys, alignment log-probs, fusion terms
    labels = torch.full((batch, width, max(frames, 1)), pad_value, dtype=torch.long, device=device)
    count = torch.zeros((batch, width), dtype=torch.long, device=device)
    last = torch.full((batch, width), -1, dtype=torch.long, device=device)
    keys = [torch.zeros((batch, width), dtype=torch.long, device=device) for _ in _HASH_MULTIPLIERS]
    p_blank = torch.full((batch, width), _NEG_INF, dtype=dtype, device=device)
    p_blank[:, 0] = 0.0  # the empty prefix, every alignment so far blank
    p_label = torch.full_like(p_blank, _NEG_INF)
    fused = torch.zeros_like(p_blank)
    top_p, top_c = log_probs.topk(k, dim=-1)  # [B, T, k], every frame at once
    blank_p = log_probs[..., blank]
    for t in range(frames):
        active = (t < lengths).unsqueeze(1)  # [B, 1]: finished rows keep their beams
        p_c, symbol = top_p[:, t].unsqueeze(1), top_c[:, t].unsqueeze(1)  # [B, 1, k]
        labelled = symbol != blank
        p_total = torch.logaddexp(p_blank, p_label)  # [B, W]
        alive = p_total > _NEG_INF
        repeat = labelled & (symbol == last.unsqueeze(-1))  # [B, W, k]: c equals the beam's last label
        # the same prefix: a blank frame, or the last label repeated without a blank between
        same_blank = p_total + blank_p[:, t].unsqueeze(1)
        same_label = torch.where(repeat, p_label.unsqueeze(-1) + p_c, _NEG_INF).logsumexp(-1)
        # the prefix extended by c (a repeat of the last label only after a blank)
        from_p = torch.where(repeat, p_blank.unsqueeze(-1), p_total.unsqueeze(-1))
        extend_label = torch.where(labelled, from_p + p_c, _NEG_INF)  # [B, W, k]
        extend_keys = [
            (key.unsqueeze(-1) * m + symbol + 1) % _HASH_MODULUS for key, m in zip(keys, _HASH_MULTIPLIERS)
        ]
        # an extension that is another live beam's prefix merges into it
        match = (
            alive[:, None, None, :]
            & ((count + 1)[:, :, None, None] == count[:, None, None, :])
            & (symbol.unsqueeze(-1) == last[:, None, None, :])
        )
        for extend_key, key in zip(extend_keys, keys):
            match = match & (extend_key.unsqueeze(-1) == key[:, None, None, :])  # [B, W, k, W]
        merged = torch.where(match, extend_label.unsqueeze(-1), _NEG_INF).flatten(1, 2).logsumexp(1)
        same_label = torch.logaddexp(same_label, merged)
        extend_label = torch.where(match.any(-1), _NEG_INF, extend_label)
        extend_fused = (fused.unsqueeze(-1) + length_bonus).expand(-1, -1, k)
        if fuse_lm:
            context = torch.where(count > 0, last, lm_start).unsqueeze(-1).expand(-1, -1, k)
            extend_fused = extend_fused + lm_weight * lm_table[context, symbol.expand(-1, width, -1)]
        scores = torch.cat(
            [torch.logaddexp(same_blank, same_label) + fused, (extend_label + extend_fused).flatten(1)], dim=1
        )
        pick = scores.topk(width, dim=1).indices  # [B, W], best first
        extended = pick >= width
        source = torch.where(extended, (pick - width) // k, pick)
        flat = (pick - width).clamp(min=0)  # index into the [W * k] extensions
        new_symbol = symbol.squeeze(1).gather(1, flat % k)
        picked = functools.partial(_picked, active=active, extended=extended, flat=flat, source=source)
        new_labels = labels.gather(1, source.unsqueeze(-1).expand(-1, -1, labels.shape[-1]))
        # an extension writes its label after its source beam's labels
        slot = count.gather(1, source).clamp(max=labels.shape[-1] - 1).unsqueeze(-1)
        new_labels.scatter_(
            2, slot, torch.where(extended.unsqueeze(-1), new_symbol.unsqueeze(-1), new_labels.gather(2, slot))
        )
        labels = torch.where(active.unsqueeze(-1), new_labels, labels)
        keys = [picked(extend_key, key, key) for extend_key, key in zip(extend_keys, keys)]
        count = picked((count + 1).unsqueeze(-1).expand(-1, -1, k), count, count)
        last = picked(symbol.expand(-1, width, -1), last, last)
        p_blank = picked(torch.full_like(extend_label, _NEG_INF), same_blank, p_blank)
        p_label = picked(extend_label, same_label, p_label)
        fused = picked(extend_fused, fused, fused)
    final = torch.logaddexp(p_blank, p_label) + fused
    best = final.argmax(dim=1, keepdim=True)  # [B, 1]
    best_labels = labels.gather(1, best.unsqueeze(-1).expand(-1, -1, labels.shape[-1])).squeeze(1)
    return best_labels[:, :frames], count.gather(1, best).squeeze(1), final.gather(1, best).squeeze(1)
