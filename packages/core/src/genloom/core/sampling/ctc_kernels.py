"""CTC prefix beam search with shallow fusion as one Triton kernel per batch row (the GPU path).

`ctc_beam_search_batched` runs the search as tensor code: ~40 small operators a frame, which at batch 1 on a
GPU cost their launches, not their arithmetic. Here one program per row runs every frame with the beams in
registers (blank / label log-probs, fusion terms, label counts, last labels, two rolling prefix keys), takes
the W best of the W x (k + 1) candidates by W maxima over integer keys (score bits above the inverted index:
leftmost-argmax order, each candidate once) and gathers their fields through a per-row scratch table (one-hot
reductions per field took three quarters of the time at batch 1), records a backpointer per beam and frame,
and walks back from the best beam at the end. `ctc_beam_search` is a torch custom op: this kernel on
CUDA for float32 log-probs, `ctc_beam_search_batched` elsewhere; a CUDA graph captures it and torch.compile
keeps it opaque. The same search; float32 rounding (log-add-exp by another formula) can reorder near-ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .ctc import _HASH_MODULUS, _HASH_MULTIPLIERS, ctc_beam_search_batched

try:  # Triton ships with CUDA builds of torch; without it the tensor search runs on CUDA too
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None


KERNEL_WARPS = 8  # warps of the one program per row
TOPK_KERNEL_MAX_VOCAB = 8192  # larger vocabularies take torch.topk (a frame's symbols must fit one program)

if triton is not None:
    _TAKEN = tl.constexpr(-(2**63))  # a candidate key below every other: the candidate was taken

    @triton.jit
    def _log_add(a, b):
        """log(exp(a) + exp(b)), -inf when both are."""
        high = tl.maximum(a, b)
        low = tl.minimum(a, b)
        safe = tl.where(high == float("-inf"), 0.0, high)
        return tl.where(high == float("-inf"), float("-inf"), safe + tl.log(1.0 + tl.exp(low - safe)))

    @triton.jit
    def _frame_topk_kernel(
        log_probs, top_p, top_c, blank_p, vocab, blank, K: tl.constexpr, BLOCK: tl.constexpr
    ):
        """One program per (row, frame): its K likeliest symbols, best first (ties: the lower id first), and the
        blank's log-prob, all frames in parallel: in place of torch.topk's radix passes plus the blank gather
        (~60 us for 48 frames of 3,500 symbols on the H100; this kernel's own time is not isolated yet)."""
        frame = tl.program_id(0).to(tl.int64)
        ids = tl.arange(0, BLOCK)
        inside = ids < vocab
        values = tl.load(log_probs + frame * vocab + ids, mask=inside, other=float("-inf"))
        tl.store(blank_p + frame, tl.load(log_probs + frame * vocab + blank))
        open_ = inside
        for i in tl.static_range(K):
            best = tl.max(tl.where(open_, values, float("-inf")), axis=0)
            at = tl.min(tl.where(open_ & (values == best), ids, BLOCK), axis=0)
            tl.store(top_p + frame * K + i, best)
            tl.store(top_c + frame * K + i, at.to(tl.int64))
            open_ = open_ & (ids != at)

    @triton.jit
    def _ctc_beam_kernel(
        top_p, top_c, blank_p, lengths, lm, back_beam, back_label, out_labels, out_count, out_score,
        float_scratch, int_scratch, frames, vocab, blank, lm_start, lm_weight, length_bonus, pad_value,
        WIDTH: tl.constexpr, K: tl.constexpr, COLS: tl.constexpr, FUSE_LM: tl.constexpr,
        MULT1: tl.constexpr, MULT2: tl.constexpr, MODULUS: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0)
        beams = tl.arange(0, WIDTH)
        cols = tl.arange(0, COLS)  # candidate columns: 0..K-1 extensions, K the same prefix, the rest unused
        cell = beams[:, None] * COLS + cols[None, :]  # [W, COLS]: a candidate's index in the table
        N: tl.constexpr = WIDTH * COLS
        floats = float_scratch + row * 3 * N  # this row's candidate fields, written and re-read each frame
        ints = int_scratch + row * 5 * N
        neg = float("-inf")
        p_blank = tl.where(beams == 0, 0.0, neg)
        p_label = tl.full([WIDTH], neg, tl.float32)
        fused = tl.zeros([WIDTH], tl.float32)
        count = tl.zeros([WIDTH], tl.int64)
        last = tl.full([WIDTH], -1, tl.int64)
        key1 = tl.zeros([WIDTH], tl.int64)
        key2 = tl.zeros([WIDTH], tl.int64)
        n = tl.load(lengths + row)
        for t in range(0, n):
            base = (row * frames + t) * K
            is_ext = cols < K
            p_c = tl.load(top_p + base + cols, mask=is_ext, other=neg)  # [COLS]
            symbol = tl.load(top_c + base + cols, mask=is_ext, other=-1)
            labelled = is_ext & (symbol != blank)
            p_total = _log_add(p_blank, p_label)  # [W]
            alive = p_total > neg
            repeat = labelled[None, :] & (symbol[None, :] == last[:, None])  # [W, COLS]
            same_blank = p_total + tl.load(blank_p + row * frames + t)
            same_label = tl.max(
                tl.where(repeat, p_label[:, None] + p_c[None, :], neg), axis=1
            )  # one match at most
            start = tl.where(repeat, p_blank[:, None], p_total[:, None])
            extend = tl.where(labelled[None, :], start + p_c[None, :], neg)  # [W, COLS]
            ext1 = (key1[:, None] * MULT1 + symbol[None, :] + 1) % MODULUS  # the tensor search's prefix keys
            ext2 = (key2[:, None] * MULT2 + symbol[None, :] + 1) % MODULUS
            match = (
                alive[None, None, :]
                & ((count + 1)[:, None, None] == count[None, None, :])
                & (symbol[None, :, None] == last[None, None, :])
                & (ext1[:, :, None] == key1[None, None, :])
                & (ext2[:, :, None] == key2[None, None, :])
                & labelled[None, :, None]
            )  # [W, COLS, W]: the extension is that live beam's prefix
            merged = tl.max(tl.max(tl.where(match, extend[:, :, None], neg), axis=1), axis=0)  # [W]
            same_label = _log_add(same_label, merged)
            extend = tl.where(tl.max(match.to(tl.int32), axis=2) > 0, neg, extend)
            extend_fused = fused[:, None] + length_bonus + tl.zeros([WIDTH, COLS], tl.float32)
            if FUSE_LM:
                context = tl.where(count > 0, last, lm_start)
                lm_score = tl.load(
                    lm + context[:, None] * vocab + symbol[None, :], mask=labelled[None, :], other=0.0
                )
                extend_fused = extend_fused + lm_weight * lm_score
            # the candidates as one [W, COLS] table: column K holds each beam's same prefix
            is_same = (cols == K)[None, :]
            score = tl.where(
                is_same, _log_add(same_blank, same_label)[:, None] + fused[:, None], extend + extend_fused
            )
            score = tl.where(is_ext[None, :] | is_same, score, neg)
            next_blank = tl.where(is_same, same_blank[:, None], neg)
            next_label = tl.where(is_same, same_label[:, None], extend)
            next_fused = tl.where(is_same, fused[:, None], extend_fused)
            next_count = tl.where(is_same, count[:, None], count[:, None] + 1)
            next_last = tl.where(is_same, last[:, None], symbol[None, :])
            next_key1 = tl.where(is_same, key1[:, None], ext1)
            next_key2 = tl.where(is_same, key2[:, None], ext2)
            emitted = tl.where(is_same, -1, symbol[None, :] + tl.zeros([WIDTH, COLS], tl.int64))
            # the W best candidates, best first, each at most once: W rounds of a max over integer keys that
            # order as (score, lower index first), i.e. leftmost argmax; a taken key drops below all others.
            # The score's float bits become an order-preserving int32 (negative ones with the magnitude
            # bits flipped) above the inverted index.
            bits = score.to(tl.int32, bitcast=True)
            ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
            keys = tl.reshape((ordered.to(tl.int64) << 32) | (N - 1 - cell).to(tl.int64), [N])
            picked = tl.zeros([WIDTH], tl.int64)
            for i in tl.static_range(WIDTH):
                top = tl.max(keys, axis=0)
                picked = tl.where(beams == i, N - 1 - (top & 0xFFFFFFFF), picked)
                keys = tl.where(keys == top, _TAKEN, keys)
            # each new beam's fields: the candidate table through this row's scratch memory (a gather of
            # W cells; register tensors cannot be indexed), between barriers so every thread sees the table
            tl.store(floats + cell, next_blank)
            tl.store(floats + N + cell, next_label)
            tl.store(floats + 2 * N + cell, next_fused)
            tl.store(ints + cell, next_count)
            tl.store(ints + N + cell, next_last)
            tl.store(ints + 2 * N + cell, next_key1)
            tl.store(ints + 3 * N + cell, next_key2)
            tl.store(ints + 4 * N + cell, emitted)
            tl.debug_barrier()
            p_blank = tl.load(floats + picked)
            p_label = tl.load(floats + N + picked)
            fused = tl.load(floats + 2 * N + picked)
            count = tl.load(ints + picked)
            last = tl.load(ints + N + picked)
            key1 = tl.load(ints + 2 * N + picked)
            key2 = tl.load(ints + 3 * N + picked)
            back = (row * frames + t) * WIDTH + beams
            tl.store(back_beam + back, picked // COLS)
            tl.store(back_label + back, tl.load(ints + 4 * N + picked))
            tl.debug_barrier()  # the next frame rewrites the table
        final = _log_add(p_blank, p_label) + fused
        best = tl.argmax(final, axis=0, tie_break_left=True)
        total = tl.sum(tl.where(beams == best, count, 0), axis=0)
        tl.store(out_count + row, total)
        tl.store(out_score + row, tl.max(tl.where(beams == best, final, neg), axis=0))
        span = tl.arange(0, 64)
        for start in range(0, frames, 64):  # pad first, then the labels from the backpointers
            tl.store(
                out_labels + row * frames + start + span,
                pad_value + tl.zeros([64], tl.int64),
                mask=start + span < frames,
            )
        tl.debug_barrier()
        beam = best.to(tl.int64)
        position = total - 1
        for j in range(0, n):
            t = n - 1 - j
            label = tl.load(back_label + (row * frames + t) * WIDTH + beam)
            tl.store(out_labels + row * frames + position, label, mask=label >= 0)
            position = tl.where(label >= 0, position - 1, position)
            beam = tl.load(back_beam + (row * frames + t) * WIDTH + beam)


def frame_candidates(log_probs: Tensor, k: int, blank: int) -> tuple[Tensor, Tensor, Tensor]:
    """(the k likeliest symbols' log-probs [B, T, k] and ids, best first, the blank's log-probs [B, T]) in float32:
    one Triton program per frame (ties: the lower id first), torch.topk for vocabularies over
    TOPK_KERNEL_MAX_VOCAB."""
    batch, frames, vocab = log_probs.shape
    if vocab > TOPK_KERNEL_MAX_VOCAB or not batch * frames:
        top_p, top_c = log_probs.float().topk(k, dim=-1)
        return top_p, top_c, log_probs[..., blank].float().contiguous()
    log_probs = log_probs.float().contiguous()
    top_p = log_probs.new_empty((batch, frames, k))
    top_c = log_probs.new_empty((batch, frames, k), dtype=torch.long)
    blank_p = log_probs.new_empty((batch, frames))
    _frame_topk_kernel[(batch * frames,)](
        log_probs, top_p, top_c, blank_p, vocab, blank, K=k, BLOCK=triton.next_power_of_2(vocab), num_warps=8,
    )  # fmt: skip
    return top_p, top_c, blank_p


def ctc_beam_search_triton(
    log_probs: Tensor, lengths: Tensor, lm: Tensor | None, beam_width: int, blank: int, candidates_per_frame: int,
    lm_start: int, lm_weight: float, length_bonus: float, pad_value: int,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """`ctc_beam_search` by the kernel, the op's arguments in its order (float32; CUDA, or CPU under
    TRITON_INTERPRET=1); beam_width a power of two."""
    batch, frames, vocab = log_probs.shape
    k = min(candidates_per_frame, vocab)
    device = log_probs.device
    top_p, top_c, blank_p = frame_candidates(log_probs, k, blank)
    fuse = lm is not None and lm_weight != 0
    table = lm.to(device, torch.float32).contiguous() if fuse else blank_p  # any tensor when unused
    back_beam = torch.empty((batch, frames, beam_width), dtype=torch.long, device=device)
    back_label = torch.empty_like(back_beam)
    labels = torch.empty((batch, frames), dtype=torch.long, device=device)
    count = torch.empty((batch,), dtype=torch.long, device=device)
    score = torch.empty((batch,), dtype=torch.float32, device=device)
    columns = triton.next_power_of_2(k + 1)
    float_scratch = torch.empty((batch, 3, beam_width * columns), dtype=torch.float32, device=device)
    int_scratch = torch.empty((batch, 5, beam_width * columns), dtype=torch.long, device=device)
    if batch:
        _ctc_beam_kernel[(batch,)](
            top_p.contiguous(), top_c.contiguous(), blank_p, lengths.long().contiguous(), table, back_beam,
            back_label, labels, count, score, float_scratch, int_scratch, frames, vocab, blank, lm_start,
            float(lm_weight), float(length_bonus), pad_value,
            WIDTH=beam_width, K=k, COLS=columns, FUSE_LM=fuse,
            MULT1=_HASH_MULTIPLIERS[0], MULT2=_HASH_MULTIPLIERS[1], MODULUS=_HASH_MODULUS, num_warps=KERNEL_WARPS,
        )  # fmt: skip
    return labels, count, score


def _tensor_search(
    log_probs, lengths, lm, beam_width, blank, candidates, lm_start, lm_weight, bonus, pad_value
):
    """`ctc_beam_search_batched` with the op's positional arguments (its outputs are new tensors)."""
    return ctc_beam_search_batched(
        log_probs, beam_width=beam_width, blank=blank, lengths=lengths, candidates_per_frame=candidates, lm=lm,
        lm_start=lm_start, lm_weight=lm_weight, length_bonus=bonus, pad_value=pad_value,
    )  # fmt: skip


@torch.library.custom_op("genloom_core::ctc_beam_search", mutates_args=())
def ctc_beam_search(
    log_probs: Tensor,
    lengths: Tensor,
    lm: Tensor | None,
    beam_width: int,
    blank: int,
    candidates_per_frame: int,
    lm_start: int,
    lm_weight: float,
    length_bonus: float,
    pad_value: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """(best labels [B, T] padded with `pad_value`, their counts [B], scores [B]) of the CTC prefix beam search
    with shallow fusion (see `ctc_beam_search_batched`); the Triton kernel on CUDA."""
    return _tensor_search(
        log_probs,
        lengths,
        lm,
        beam_width,
        blank,
        candidates_per_frame,
        lm_start,
        lm_weight,
        length_bonus,
        pad_value,
    )


@ctc_beam_search.register_kernel("cuda")
def _ctc_beam_search_cuda(*args):
    log_probs, beam_width = args[0], args[3]
    kernel_serves = (
        triton is not None and log_probs.dtype == torch.float32 and not beam_width & (beam_width - 1)
    )
    return (ctc_beam_search_triton if kernel_serves else _tensor_search)(*args)


@ctc_beam_search.register_fake
def _ctc_beam_search_fake(log_probs, *_):
    batch, frames, _ = log_probs.shape
    return (
        log_probs.new_empty((batch, frames), dtype=torch.long),
        log_probs.new_empty((batch,), dtype=torch.long),
        log_probs.new_empty((batch,)),
    )
