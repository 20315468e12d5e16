"""Beam search over a DA-Transformer graph, with an optional bigram language-model score.

A hypothesis is a forward path from vertex 0; each vertex emits its most likely token. One step extends
every live hypothesis by one jump i -> j, scored links(i, j) + beta * log p(token_j | j) (the lookahead
score, so beam 1 is lookahead decoding) + lm_weight * log p_LM(token_j | previous token); the K best
extensions over the whole beam survive, and a hypothesis that reached the last vertex is carried over
unchanged. The winner maximises score / (vertices on the path) ** length_alpha. Vectorised over batch and
beam; the loop runs over path length only.

`merge_prefixes=True` sums paths, as the official `dag_search` does: a translation's probability is the sum
over every path that emits it, so candidates that emit the same tokens so far and stand on the same vertex
are one hypothesis, scored by the log-sum-exp of their scores (the best of them keeps its path). Prefixes are
compared by two 31-bit polynomial hashes of the emitted tokens (a false merge needs both to collide: about 1
in 4e18 per pair). The official search's KenLM n-gram scoring is not reproduced (a bigram table is).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from genloom.text.dag import _emit_forward, transition_mask
from genloom.text.errors import TextInputError

__all__ = [
    "BIGRAM_FILE",
    "bigram_counts",
    "bigram_log_probs",
    "bigram_log_probs_from_counts",
    "dag_beam_decode",
]


BIGRAM_FILE = "bigram.safetensors"  # a model folder's bigram counts (`genloom text bigram` writes it)
HASH_PRIME = 2_147_483_647  # prefix hashes: two polynomial hashes modulo 2^31 - 1, products fit in int64
HASH_BASES = (1_000_003, 998_244_353)


def bigram_counts(sequences: Sequence[Sequence[int]], vocab_size: int) -> dict[str, Tensor]:
    """The bigrams seen in id sequences, sparse: {"previous", "next", "count"} (int32 [N] each), N distinct
    pairs. A 29,000-sentence corpus in a 3,500-token BPE has ~71,000 of them: ~0.8 MB to ship with a model,
    where the dense table would be 49 MB."""
    pairs: list[Tensor] = []
    for seq in sequences:
        if len(seq) > 1:
            ids = torch.as_tensor(list(seq), dtype=torch.long)
            if ids.min() < 0 or ids.max() >= vocab_size:
                raise TextInputError(f"token ids must lie in [0, {vocab_size}), got {ids.min()}..{ids.max()}")
            pairs.append(ids[:-1] * vocab_size + ids[1:])
    flat = torch.cat(pairs) if pairs else torch.zeros(0, dtype=torch.long)
    keys, count = flat.unique(return_counts=True)
    return {
        "previous": (keys // vocab_size).int(),
        "next": (keys % vocab_size).int(),
        "count": count.int(),
    }


def bigram_log_probs_from_counts(counts: dict[str, Tensor], vocab_size: int, *, add_k: float = 0.1) -> Tensor:
    """Add-k smoothed bigram table log p(next | previous), float32 [V, V], from `bigram_counts`."""
    if add_k <= 0:
        raise TextInputError(f"add_k must be > 0, got {add_k}")
    missing = {"previous", "next", "count"} - set(counts)
    if missing:
        raise TextInputError(f"bigram counts lack {sorted(missing)} (expected previous, next and count)")
    previous, following = counts["previous"].long(), counts["next"].long()
    if previous.numel() and max(int(previous.max()), int(following.max())) >= vocab_size:
        raise TextInputError(f"bigram counts name token ids >= the vocabulary size {vocab_size}")
    table = torch.full((vocab_size, vocab_size), float(add_k))
    table.index_put_((previous, following), counts["count"].float(), accumulate=True)
    return (table / table.sum(-1, keepdim=True)).log()


def bigram_log_probs(sequences: Sequence[Sequence[int]], vocab_size: int, *, add_k: float = 0.1) -> Tensor:
    """Add-k smoothed bigram table log p(next | previous), float32 [V, V], from id sequences."""
    return bigram_log_probs_from_counts(bigram_counts(sequences, vocab_size), vocab_size, add_k=add_k)


@torch.no_grad()
def dag_beam_decode(
    links: Tensor,
    token_logprobs: Tensor,
    output_length: Tensor,
    *,
    beam_size: int = 4,
    beta: float = 1.0,
    length_alpha: float = 0.0,
    bigram: Tensor | None = None,
    lm_weight: float = 0.0,
    pad: int = 1,
    collapse_repeats: bool = True,
    fixed_width: bool = False,
    merge_prefixes: bool = False,
) -> tuple[Tensor, Tensor]:
    """(tokens [B, N] right-padded with `pad`, best vertex path [B, L] with -1 past its end).

    links [B, L, L] transition log-probs; token_logprobs [B, L, V]; output_length [B] graph sizes.
    `fixed_width`: no device read at all (all L - 1 steps run, even once every hypothesis has ended, and
    N = L), so the search can be captured in a CUDA graph with the pass; the same tokens, wider padding.
    `merge_prefixes`: candidates with the same emitted tokens on the same vertex become one hypothesis whose
    score is the log-sum-exp of theirs (the sum over paths; see the module docstring)."""
    if beam_size < 1:
        raise TextInputError(f"beam_size must be >= 1, got {beam_size}")
    batch, length, _ = links.shape
    vocab = token_logprobs.shape[-1]
    if bigram is not None and bigram.shape != (vocab, vocab):
        raise TextInputError(f"bigram table must be [{vocab}, {vocab}], got {tuple(bigram.shape)}")
    device, k = links.device, beam_size
    if bigram is not None:
        bigram = bigram.to(device)  # once, not per step (a CPU table is ~50 MB at a 3,500-token vocabulary)
    best_logp, best_token = token_logprobs.float().max(dim=-1)  # [B, L]
    links = links.float().masked_fill(~transition_mask(output_length, length), float("-inf"))
    last = (output_length - 1).view(-1, 1)
    vertex = torch.zeros(batch, k, dtype=torch.long, device=device)
    score = torch.full((batch, k), float("-inf"), device=device)
    score[:, 0] = beta * best_logp[:, 0]
    paths = torch.full((batch, k, length), -1, dtype=torch.long, device=device)
    paths[:, :, 0] = 0
    visited = torch.ones(batch, k, device=device)
    hashes = None
    if merge_prefixes:  # the prefix hashes, and the merge's constants built once: hash bases filled on the
        # device (no host-to-device copy: the search may run in a CUDA graph capture), each jump's vertex
        hashes = _start_hashes(best_token[:, :1].expand(-1, k))
        bases = torch.stack([best_token.new_full((), base) for base in HASH_BASES])
        targets = torch.arange(length, device=device).expand(batch, k, -1)
    for step in range(1, length):
        finished = vertex == last
        if not fixed_width and finished.all():
            break
        cand = score.unsqueeze(-1) + links.gather(1, vertex.unsqueeze(-1).expand(-1, -1, length))
        cand = cand + beta * best_logp.unsqueeze(1)
        if bigram is not None and lm_weight:
            previous = best_token.gather(1, vertex)  # [B, K]
            lm = bigram[previous].gather(-1, best_token.unsqueeze(1).expand(-1, k, -1))
            cand = cand + lm_weight * lm
        cand = cand.masked_fill(finished.unsqueeze(-1), float("-inf"))
        stay = torch.where(finished, score, torch.full_like(score, float("-inf")))
        options = torch.cat([cand, stay.unsqueeze(-1)], dim=-1).view(batch, -1)  # [B, K * (L + 1)]
        if hashes is not None:
            option_hashes, option_vertex = _option_keys(
                hashes, vertex, best_token, bases, targets, pad, collapse_repeats
            )
            options = _merge_equal_prefixes(options, option_hashes, option_vertex, length)
        score, index = options.topk(k, dim=-1)
        origin, choice = index // (length + 1), index % (length + 1)
        moved = choice < length
        vertex = torch.where(moved, choice, vertex.gather(1, origin))
        paths = paths.gather(1, origin.unsqueeze(-1).expand(-1, -1, length)).clone()
        paths[:, :, step] = torch.where(moved, choice, paths[:, :, step])
        visited = visited.gather(1, origin) + moved.float()
        if hashes is not None:
            hashes = option_hashes.gather(1, index.unsqueeze(-1).expand(-1, -1, 2))
    final = torch.where(
        vertex == last, score / visited.pow(length_alpha), torch.full_like(score, float("-inf"))
    )
    best = final.argmax(dim=-1)
    path = paths[torch.arange(batch, device=device), best]
    tokens = _emit_forward(
        path, best_token, pad=pad, collapse_repeats=collapse_repeats, width=length if fixed_width else None
    )
    return tokens, path


def _start_hashes(tokens: Tensor) -> Tensor:
    """The prefix hashes [..., 2] (int64) of one-token prefixes."""
    return (tokens.unsqueeze(-1) + 1).expand(*tokens.shape, 2).remainder(HASH_PRIME)


def _option_keys(
    hashes: Tensor, vertex: Tensor, best_token: Tensor, bases: Tensor, targets: Tensor, pad: int,
    collapse_repeats: bool,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(prefix hashes [B, K * (L + 1), 2], vertices [B, K * (L + 1)]) of the search's options: for a jump of
    hypothesis k to vertex j, its prefix extended by j's token (unless `_emit_forward` drops it: a pad, or a
    repeat of the previous vertex's token under `collapse_repeats`); for its "stay" option, itself. `bases`
    [2]: the hashes' bases; `targets` [B, K, L]: each jump's vertex."""
    batch, k, _ = hashes.shape
    token = best_token.unsqueeze(1).expand(-1, k, -1)  # [B, K, L]: the token each jump emits
    previous = best_token.gather(1, vertex).unsqueeze(-1)  # [B, K, 1]
    emitted = token != pad
    if collapse_repeats:
        emitted = emitted & (token != previous)
    extended = (hashes.unsqueeze(2) * bases + (token.unsqueeze(-1) + 1)).remainder(HASH_PRIME)  # [B, K, L, 2]
    moved = torch.where(emitted.unsqueeze(-1), extended, hashes.unsqueeze(2))
    option_hashes = torch.cat([moved, hashes.unsqueeze(2)], dim=2).view(batch, -1, 2)
    option_vertex = torch.cat([targets, vertex.unsqueeze(-1)], dim=2).view(batch, -1)
    return option_hashes, option_vertex


def _merge_equal_prefixes(scores: Tensor, hashes: Tensor, vertex: Tensor, length: int) -> Tensor:
    """scores [B, M] with the options of equal (prefix hash, vertex) merged: the best of each group gets the
    group's log-sum-exp, the others -inf (so a top-k takes a group once, through its best member's path).
    `length`: vertices of the graph (vertex < length), so the second hash and the vertex share one int64 key."""
    keys = torch.stack([hashes[..., 0], hashes[..., 1] * length + vertex], dim=-1)  # [B, M, 2]
    # group by the keys, best score first in each group: stable sorts, least significant first
    order = scores.argsort(dim=-1, descending=True, stable=True)
    for key in (keys[..., 1], keys[..., 0]):
        order = order.gather(1, key.gather(1, order).argsort(dim=-1, stable=True))
    keys = keys.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
    starts = torch.ones_like(vertex, dtype=torch.bool)
    starts[:, 1:] = (keys[:, 1:] != keys[:, :-1]).any(-1)
    group = starts.long().cumsum(dim=1) - 1  # [B, M], in sorted order
    sorted_scores = scores.gather(1, order)
    best = torch.full_like(scores, float("-inf")).scatter_reduce(1, group, sorted_scores, "amax")
    shift = best.gather(1, group)
    finite_shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    total = torch.zeros_like(scores).scatter_add(1, group, (sorted_scores - finite_shift).exp())
    merged = torch.where(torch.isfinite(best), best + total.log(), best)  # log-sum-exp per group
    merged_sorted = torch.where(starts, merged.gather(1, group), torch.full_like(scores, float("-inf")))
    return torch.full_like(scores, float("-inf")).scatter(1, order, merged_sorted)
