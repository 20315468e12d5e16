"""Beam search over a DA-Transformer graph, with an optional bigram language-model score.

A hypothesis is a forward path from vertex 0; each vertex emits its most likely token. One step extends
every live hypothesis by one jump i -> j, scored links(i, j) + beta * log p(token_j | j) (the lookahead
score, so beam 1 is lookahead decoding) + lm_weight * log p_LM(token_j | previous token); the K best
extensions over the whole beam survive, and a hypothesis that reached the last vertex is carried over
unchanged. The winner maximises score / (vertices on the path) ** length_alpha. Vectorised over batch and
beam; the loop runs over path length only. (The official `dag_search` also merges hypotheses with equal
token prefixes and scores with KenLM n-grams: neither is reproduced here.)
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
) -> tuple[Tensor, Tensor]:
    """(tokens [B, N] right-padded with `pad`, best vertex path [B, L] with -1 past its end).

    links [B, L, L] transition log-probs; token_logprobs [B, L, V]; output_length [B] graph sizes.
    `fixed_width`: no device read at all (all L - 1 steps run, even once every hypothesis has ended, and
    N = L), so the search can be captured in a CUDA graph with the pass; the same tokens, wider padding."""
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
        score, index = options.topk(k, dim=-1)
        origin, choice = index // (length + 1), index % (length + 1)
        moved = choice < length
        vertex = torch.where(moved, choice, vertex.gather(1, origin))
        paths = paths.gather(1, origin.unsqueeze(-1).expand(-1, -1, length)).clone()
        paths[:, :, step] = torch.where(moved, choice, paths[:, :, step])
        visited = visited.gather(1, origin) + moved.float()
    final = torch.where(
        vertex == last, score / visited.pow(length_alpha), torch.full_like(score, float("-inf"))
    )
    best = final.argmax(dim=-1)
    path = paths[torch.arange(batch, device=device), best]
    tokens = _emit_forward(
        path, best_token, pad=pad, collapse_repeats=collapse_repeats, width=length if fixed_width else None
    )
    return tokens, path
