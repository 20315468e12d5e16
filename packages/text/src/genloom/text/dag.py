"""DA-Transformer's directed acyclic graph: transition links, DAG loss, best alignment and decoding.

Huang et al., "Directed Acyclic Transformer for Non-Autoregressive Machine Translation", ICML 2022.
A decoder with L = lambda x source-length vertices predicts a token distribution per vertex and a
forward-only transition distribution per vertex (`links[b, i, j] = log P(i -> j)`, `-inf` for j <= i).
A target is emitted by a path from vertex 0 to vertex `output_length - 1`.

Everything here is batched tensor code: the dynamic programmes loop over the target length (or the
path length), never over batch rows, so it runs unchanged on the GPU. Shapes follow the official
torch fallback (`match [B, T, L]`, `links [B, L, L]`), which `tests/text/test_dag_parity.py` reproduces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genloom.text.errors import GraphTooSmallError, TextInputError
from genloom.text.viterbi_ops import viterbi_backtrack, viterbi_forward

NEG_INF = float("-inf")


def safe_logsumexp(x: Tensor, dim: int) -> Tensor:
    """`logsumexp` whose value and gradient stay finite-or-`-inf` (no NaN) when a slice is all `-inf`."""
    peak = x.amax(dim=dim, keepdim=True).detach()
    empty = peak == NEG_INF
    total = (x - peak.masked_fill(empty, 0.0)).exp().sum(dim=dim, keepdim=True)
    # adding `peak` itself: it is -inf exactly on the empty slices (one masking less per call)
    return (total.masked_fill(empty, 1.0).log() + peak).squeeze(dim)


class DagLinkHead(nn.Module):
    """Multi-head transition scorer: `links[b, i, j] = log sum_h g_h(i) softmax_j(q_h(i) . k_h(j) / sqrt(d_h))`.

    The gate `g(i)` mixes `num_heads` transition distributions per vertex (the official "decomposed
    link"). Transitions go strictly forward and only into vertices below `output_length`; a vertex with
    no successor (the last one, padding) gets an all `-inf` row.
    """

    def __init__(self, *, dim: int = 256, num_heads: int = 4) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise TextInputError(f"DagLinkHead: dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.query_linear = nn.Linear(dim, dim)
        self.key_linear = nn.Linear(dim, dim)
        self.gate_linear = nn.Linear(dim, num_heads)

    def forward(self, features: Tensor, output_length: Tensor) -> Tensor:
        """features [B, L, D], output_length [B] -> links [B, L, L] (float32 log-probabilities)."""
        batch, length, dim = features.shape
        head_dim = dim // self.num_heads
        query = self.query_linear(features).float().view(batch, length, self.num_heads, head_dim)
        key = self.key_linear(features).float().view(batch, length, self.num_heads, head_dim)
        log_gates = F.log_softmax(self.gate_linear(features).float(), dim=-1)  # [B, L, H]
        with torch.autocast(features.device.type, enabled=False):  # transition scores in float32
            scores = torch.einsum("bihd,bjhd->bijh", query, key) / head_dim**0.5
        valid = transition_mask(output_length, length)  # [B, L, L]
        no_successor = ~valid.any(-1, keepdim=True)  # [B, L, 1]
        # rows without a successor are filled after the softmax (keeps the softmax NaN-free)
        scores = scores.masked_fill(~(valid | no_successor).unsqueeze(-1), NEG_INF)
        per_head = F.log_softmax(scores, dim=2).masked_fill(no_successor.unsqueeze(-1), NEG_INF)
        return safe_logsumexp(per_head + log_gates.unsqueeze(2), dim=-1)


def transition_mask(output_length: Tensor, length: int) -> Tensor:
    """[B, L, L] bool: True where i -> j is allowed (j > i and j < output_length[b])."""
    idx = torch.arange(length, device=output_length.device)
    forward_only = idx.view(1, -1) > idx.view(-1, 1)
    in_graph = idx.view(1, 1, -1) < output_length.view(-1, 1, 1)
    return forward_only.unsqueeze(0) & in_graph


def check_graph_sizes(
    output_length: Tensor, target_length: Tensor, *, num_vertices: int, num_targets: int
) -> None:
    """Raise a clear error when a graph cannot emit its target (fewer vertices than target tokens)."""
    if output_length.shape != target_length.shape or output_length.dim() != 1:
        raise TextInputError(
            f"output_length and target_length must be 1-D of the same size, got {tuple(output_length.shape)} "
            f"and {tuple(target_length.shape)}"
        )
    # one device read on the happy path; the messages below are built only when a check fails
    too_small = (target_length > output_length) | ((target_length == 1) & (output_length > 1))
    flags = torch.stack(
        [
            ((output_length < 1) | (output_length > num_vertices)).any(),
            ((target_length < 1) | (target_length > num_targets)).any(),
            too_small.any(),
        ]
    ).tolist()
    if flags[0]:
        raise TextInputError(f"output_length must lie in [1, {num_vertices}], got {output_length.tolist()}")
    if flags[1]:
        raise TextInputError(f"target_length must lie in [1, {num_targets}], got {target_length.tolist()}")
    if flags[2]:
        rows = too_small.nonzero().flatten().tolist()
        raise GraphTooSmallError(
            f"DAG graph too small for its target in rows {rows}: graph sizes "
            f"{output_length[too_small].tolist()} vs target lengths {target_length[too_small].tolist()}; a path "
            "from the first to the last vertex needs graph size >= target length (and a 1-token target needs a "
            "1-vertex graph). Raise the upsampling ratio or truncate the target."
        )


def dag_match(token_logits: Tensor, targets: Tensor) -> Tensor:
    """token_logits [B, L, V], targets [B, T] -> match [B, T, L] = log P(y_t | vertex l), at least float32."""
    logp = token_logits.log_softmax(-1, dtype=torch.promote_types(token_logits.dtype, torch.float32))
    index = targets.clamp(min=0).unsqueeze(1).expand(-1, logp.shape[1], -1)
    return logp.gather(-1, index).transpose(1, 2)


def dag_log_likelihood(match: Tensor, links: Tensor, output_length: Tensor, target_length: Tensor) -> Tensor:
    """log P(Y | X) summed over every path from vertex 0 to vertex output_length-1 -> [B].

    Forward algorithm in log space: f_0 = match[:, 0] at vertex 0; f_t(j) = logsumexp_i(f_{t-1}(i) +
    links(i, j)) + match[:, t, j]. Differentiable (autograd through a NaN-safe logsumexp).
    """
    batch, num_targets, num_vertices = match.shape
    check_graph_sizes(output_length, target_length, num_vertices=num_vertices, num_targets=num_targets)
    rows = torch.arange(batch, device=match.device)
    f = torch.full((batch, num_vertices), NEG_INF, dtype=match.dtype, device=match.device)
    f = f.index_put((rows, torch.zeros_like(rows)), match[:, 0, 0])
    finals = [f]
    for t in range(1, num_targets):
        f = safe_logsumexp(f.unsqueeze(-1) + links, dim=1) + match[:, t]
        finals.append(f)
    table = torch.stack(finals, dim=1)  # [B, T, L]
    return table[rows, target_length - 1, output_length - 1]


def dag_loss(
    token_logits: Tensor, links: Tensor, targets: Tensor, output_length: Tensor, target_length: Tensor
) -> Tensor:
    """The DA-Transformer training loss: -mean_b(log P(Y_b | X_b) / |Y_b|) (the official criterion)."""
    logprob = dag_log_likelihood(dag_match(token_logits, targets), links, output_length, target_length)
    return -(logprob / target_length.to(logprob.dtype)).mean()


@torch.no_grad()
def dag_best_alignment(
    match: Tensor, links: Tensor, output_length: Tensor, target_length: Tensor
) -> tuple[Tensor, Tensor]:
    """Viterbi path of the target through the graph.

    Returns (path [B, L] with the target index each vertex emits, -1 for vertices off the path;
    max_logprob [B], the score of that path).
    """
    batch, num_targets, num_vertices = match.shape
    check_graph_sizes(output_length, target_length, num_vertices=num_vertices, num_targets=num_targets)
    rows = torch.arange(batch, device=match.device)
    f = torch.full((batch, num_vertices), NEG_INF, dtype=match.dtype, device=match.device)
    f[:, 0] = match[:, 0, 0]
    scores, backpointers = [f], [torch.zeros(batch, num_vertices, dtype=torch.long, device=match.device)]
    for t in range(1, num_targets):
        best, argbest = (f.unsqueeze(-1) + links).max(dim=1)
        f = best + match[:, t]
        scores.append(f)
        backpointers.append(argbest)
    table = torch.stack(scores, dim=1)
    max_logprob = table[rows, target_length - 1, output_length - 1]
    # walk back from (T_b - 1, L_b - 1); rows with shorter targets join the walk when t reaches their end.
    # Per step only a gather and a select: the vertices are collected and written into the path at once.
    steps = torch.arange(num_targets, device=match.device).unsqueeze(1)  # [T, 1]
    on_path = steps < target_length  # [T, B]
    at_end = steps == target_length - 1
    last = output_length - 1
    vertex = last
    vertices = [vertex]
    for t in range(num_targets - 2, -1, -1):
        previous = backpointers[t + 1].gather(1, vertex.unsqueeze(1)).squeeze(1)
        vertex = torch.where(at_end[t], last, torch.where(on_path[t], previous, vertex))
        vertices.append(vertex)
    visited = torch.stack(vertices[::-1])  # [T, B]
    write_at = torch.where(on_path, visited, num_vertices).T  # off-path steps land in the spare column
    path = torch.full((batch, num_vertices + 1), -1, dtype=torch.long, device=match.device)
    path.scatter_(1, write_at, steps.T.expand(batch, -1).contiguous())
    return path[:, :num_vertices], max_logprob


def compact_tokens(tokens: Tensor, keep: Tensor, *, pad: int, width: int | None = None) -> Tensor:
    """Left-pack the kept tokens of each row: [B, N] -> [B, width or max kept], right-padded with `pad`."""
    if width is None:
        counts = keep.sum(1)
        width = int(counts.max().item()) if counts.numel() else 0
    out = torch.full((tokens.shape[0], width + 1), pad, dtype=tokens.dtype, device=tokens.device)
    position = torch.where(keep, keep.long().cumsum(1) - 1, torch.full_like(tokens, width))
    out.scatter_(1, position, tokens)
    return out[:, :width]


def jump_lm_scores(bigram: Tensor, vertex_token: Tensor) -> Tensor:
    """[B, L, L]: log p_LM(token of j | token of i) for every jump i -> j, from a bigram table [V, V] and the
    token each vertex emits [B, L] (one token a vertex: the LM score of a jump depends on its two ends)."""
    return bigram[vertex_token.unsqueeze(-1), vertex_token.unsqueeze(-2)]


@torch.no_grad()
def dag_lookahead_decode(
    links: Tensor,
    token_logprobs: Tensor,
    output_length: Tensor,
    *,
    beta: float | None = 1.0,
    pad: int = 1,
    collapse_repeats: bool = True,
    fixed_width: bool = False,
    max_vertices: int | None = None,
    bigram: Tensor | None = None,
    lm_weight: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Greedy (beta=None) or lookahead decoding: from vertex 0, jump to argmax_j links(i, j) + beta * max_v log p(v|j)
    (+ lm_weight * log p_LM(token_j | token_i) with a `bigram` table [V, V]: each vertex emits one token, so the
    language-model score of a jump depends on its two vertices alone and the decoding stays one vectorised
    argmax, what beam search of width 1 with the same table finds).

    Each vertex emits its argmax token; `pad` tokens after the first are dropped, and so are consecutive
    duplicates when `collapse_repeats` (the official post-processing; turn it off where targets repeat tokens). Returns (tokens [B, N] right-padded with `pad`, vertex path [B, L]
    with -1 past the end of each path). `fixed_width` returns N = L columns instead of the longest output (no
    device read: what a CUDA graph needs). `max_vertices` as in `follow_jumps`.
    """
    best_logp, best_token = token_logprobs.max(dim=-1)
    jump_scores = links if beta is None else links + beta * best_logp.unsqueeze(1)
    if bigram is not None and lm_weight:
        jump_scores = jump_scores + lm_weight * jump_lm_scores(bigram, best_token)
    next_vertex = jump_scores.argmax(dim=-1)  # [B, L]
    path = follow_jumps(next_vertex, output_length, max_vertices=max_vertices)
    tokens = _emit_forward(
        path,
        best_token,
        pad=pad,
        collapse_repeats=collapse_repeats,
        width=path.shape[1] if fixed_width else None,
    )
    return tokens, path


def follow_jumps(next_vertex: Tensor, output_length: Tensor, *, max_vertices: int | None = None) -> Tensor:
    """Vertices visited from vertex 0 by `next_vertex` [B, L] until output_length-1, as [B, L] (-1 padded).

    Pointer doubling instead of a walk: with the last vertex made absorbing, the set reached within 2m
    jumps is S_m plus next^m(S_m), so ceil(log2 L) rounds find every visited vertex; since jumps only go
    forward, the path is those vertices in increasing order. More rounds change nothing (the path's own
    vertices jump along the path), so `max_vertices` (a bound on L) sets the round count from a constant:
    a pass compiled with a symbolic L then serves every L.
    """
    batch, num_vertices = next_vertex.shape
    index = torch.arange(num_vertices, device=next_vertex.device).expand(batch, -1)
    jump = torch.where(index >= (output_length - 1).unsqueeze(1), index, next_vertex)
    reached = (index == 0).long()
    bound = num_vertices if max_vertices is None else max_vertices
    for _ in range(max(bound - 1, 1).bit_length()):
        reached = reached.scatter_reduce(1, jump, reached, reduce="amax")
        jump = jump.gather(1, jump)
    return compact_tokens(index, reached.bool(), pad=-1, width=num_vertices)


def _emit_forward(
    path: Tensor, best_token: Tensor, *, pad: int, collapse_repeats: bool, width: int | None = None
) -> Tensor:
    """Tokens along a forward path: keep the first, then drop pads and repeats of the previous vertex's token."""
    on_path = path >= 0
    tokens = best_token.gather(1, path.clamp(min=0))
    previous = torch.cat([torch.full_like(tokens[:, :1], -1), tokens[:, :-1]], dim=1)
    keep = on_path & (tokens != pad)
    if collapse_repeats:
        keep = keep & (tokens != previous)
    keep[:, 0] = on_path[:, 0]
    return compact_tokens(tokens, keep, pad=pad, width=width)


def viterbi_steps(num_vertices: int, upsample_scale: float) -> int:
    """Path lengths Viterbi considers: 2 K / upsample_scale (at least 1), the official bound. Integer maths for
    an integral scale, so a symbolic K (a compiled pass) stays symbolic instead of specialising."""
    if float(upsample_scale).is_integer() and upsample_scale > 0:
        return torch.sym_max((2 * num_vertices) // int(upsample_scale), 1)
    return max(int(2 * num_vertices / upsample_scale), 1)


@torch.no_grad()
def dag_viterbi_decode(
    links: Tensor,
    token_logprobs: Tensor,
    output_length: Tensor,
    *,
    length_beta: float = 1.0,
    upsample_scale: float = 8.0,
    joint: bool = False,
    pad: int = 1,
    collapse_repeats: bool = True,
    bigram: Tensor | None = None,
    lm_weight: float = 0.0,
    fixed_width: bool = False,
    graph_masked: bool = False,
) -> tuple[Tensor, Tensor]:
    """Length-normalised Viterbi decoding (Shao et al. 2022), as DA-Transformer's `inference_viterbi`.

    A `bigram` table [V, V] adds lm_weight * log p_LM(token_j | token_i) to every transition i -> j (each vertex
    emits one token, so the LM is exact inside the dynamic programme). `fixed_width` returns N = K columns
    with no device read (what a CUDA graph needs). `graph_masked`: the links into and out of every vertex past
    a row's `output_length` are -inf (as `LinkHead` makes them), so the recursion may skip those vertices.

    Finds, for every path length k <= 2 * L / upsample_scale, the best path ending at the last vertex
    (score = transitions + the first emitted vertex's token log-prob; `joint=True` adds every vertex's
    token log-prob, the official "jointviterbi"), then picks the length maximising score / k**length_beta.
    Neither vertex 0 nor the last vertex emits (they carry bos / eos in training; official behaviour);
    pads and (with `collapse_repeats`) repeats of the following token are dropped, except the last token.
    Returns (tokens [B, N] right-padded with `pad`, vertex path [B, K] with -1 past the end).
    """
    batch, num_vertices, _ = links.shape
    best_logp, best_token = token_logprobs.max(dim=-1)
    if bigram is not None and lm_weight:
        links = links + lm_weight * jump_lm_scores(bigram, best_token)
    max_steps = viterbi_steps(num_vertices, upsample_scale)
    alpha = links[:, 0] + best_logp
    if joint:
        alpha = alpha + best_logp[:, :1]
    # joint: every vertex's token log-prob joins the transition into it once, not at every step
    step_links = links + best_logp.unsqueeze(1) if joint else links
    # one kernel for the whole recursion and one for the walk back on CUDA (viterbi_ops)
    # [S, B, L]; with the graph masked, its sizes let a long padded graph's short rows run in registers
    sizes = output_length if graph_masked else None
    table, backpointers = viterbi_forward(step_links.contiguous(), alpha.contiguous(), max_steps, sizes)
    into_last = links.gather(2, (output_length - 1).view(batch, 1, 1).expand(-1, num_vertices, 1)).squeeze(-1)
    table = table + into_last.unsqueeze(0)
    best_score, best_vertex = table.max(dim=-1)  # [K, B]
    steps = torch.arange(1, max_steps + 1, device=links.device).unsqueeze(-1)
    normalised = best_score / steps.to(best_score.dtype) ** length_beta
    num_emitted = normalised.argmax(dim=0) + 1  # [B]
    last_vertex = best_vertex.gather(0, (num_emitted - 1).unsqueeze(0)).squeeze(0)
    path = viterbi_backtrack(backpointers, last_vertex, num_emitted, max_steps)
    # backward emission: keep the last token, drop pads and tokens equal to the next vertex's token
    on_path = path >= 0
    tokens = best_token.gather(1, path.clamp(min=0))
    following = torch.cat([tokens[:, 1:], torch.full_like(tokens[:, :1], -1)], dim=1)
    is_last = torch.arange(max_steps, device=links.device).unsqueeze(0) == (num_emitted - 1).unsqueeze(1)
    repeat = (tokens == following) if collapse_repeats else torch.zeros_like(on_path)
    keep = on_path & (is_last | (~repeat & (tokens != pad)))
    return compact_tokens(tokens, keep, pad=pad, width=max_steps if fixed_width else None), path
