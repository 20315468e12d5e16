"""Viterbi's dynamic programme over a DAG as two device kernels: the max-plus recursion and the walk back.

The recursion `alpha_s(v) = max_u alpha_{s-1}(u) + step_links(u, v)` runs once per path length. As torch
operators it is an add and a max per step (two kernel launches for each of ~K/4 steps), and the walk back
along the backpointers a few dozen more: at batch 1 on a GPU those launches, not the arithmetic, set the
time of a DA-Transformer Viterbi decoding. On CUDA a Triton kernel runs every step of a batch row in one
program (up to 128 vertices the transition matrix and the scores stay in registers from step to step; larger
graphs re-read the matrix from L2 each step) and a second one walks back; both are torch custom ops
(`genloom_text::viterbi_forward`, `genloom_text::viterbi_backtrack`), so a CUDA graph captures them and
`torch.compile` keeps them as opaque calls of symbolic size (one compile for every graph size). Elsewhere (CPU, CUDA without Triton, other dtypes) the torch reference runs. The kernels equal
it exactly: the same float32 additions and maxima, the first maximising index on ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:  # Triton ships with CUDA builds of torch; without it the reference runs on CUDA too
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

SINGLE_TILE_MAX = 128  # graphs of up to this many vertices keep their whole transition matrix in registers
SMALL_TILE_MAX = 64  # given the graph sizes, rows of up to this many vertices take a 64-vertex tile
FORWARD_BLOCK_U = 32  # larger graphs: source vertices reduced per tile
FORWARD_MAX_BLOCK_V = 256  # and target vertices per tile


def viterbi_forward_reference(step_links: Tensor, alpha: Tensor, num_steps: int) -> tuple[Tensor, Tensor]:
    """-> (scores [num_steps, B, K]: the best score of a path of s + 1 vertices ending at each vertex, scores[0]
    = alpha; backpointers [num_steps - 1, B, K]: the argmax predecessor at step s + 1), as torch operators."""
    scores, backpointers = [alpha], []
    for _ in range(num_steps - 1):
        alpha, argbest = (alpha.unsqueeze(-1) + step_links).max(dim=1)
        scores.append(alpha)
        backpointers.append(argbest)
    if not backpointers:
        return torch.stack(scores), torch.empty((0, *alpha.shape), dtype=torch.long, device=alpha.device)
    return torch.stack(scores), torch.stack(backpointers)


def follow_backpointers_reference(
    backpointers: Tensor, last_vertex: Tensor, num_emitted: Tensor, num_steps: int
) -> Tensor:
    """Viterbi's path [B, num_steps] (-1 past each row's `num_emitted` vertices) from backpointers [S - 1, B, K].

    Position n - 1 holds `last_vertex`, position s < n - 1 holds backpointers[s] applied to position s + 1's
    vertex. Binary lifting instead of a walk back: tables of the maps composed over 2^r consecutive positions
    (r < log2 num_steps), then every position at once follows the bits of its distance to n - 1 (~4 log2 K
    operators in place of ~5 per position)."""
    batch, device = last_vertex.shape[0], last_vertex.device
    if num_steps == 1:  # one position: the last vertex alone
        return last_vertex.unsqueeze(1)
    num_vertices = backpointers.shape[-1]
    identity = torch.arange(num_vertices, device=device).expand(batch, -1)
    maps = torch.cat(
        [backpointers, identity.unsqueeze(0)]
    )  # [S, B, K]: position s maps s + 1's vertex to s's
    rounds = max(num_steps - 1, 1).bit_length()
    tables = [maps]
    for r in range(1, rounds):
        half = 2 ** (r - 1)
        previous = tables[-1]
        later = torch.cat([previous[half:], identity.expand(half, -1, -1)])[:num_steps]
        tables.append(previous.gather(-1, later))  # (P_s o P_{s + half})(v) = P_s[P_{s + half}[v]]
    positions = torch.arange(num_steps, device=device)
    distance = (num_emitted - 1).unsqueeze(1) - positions  # [B, S]; negative: past the path's end
    at = (num_emitted - 1).unsqueeze(1).expand(-1, num_steps)
    vertex = last_vertex.unsqueeze(1).expand(-1, num_steps)
    rows = torch.arange(batch, device=device).unsqueeze(1)
    for r, table in enumerate(tables):
        step_back = (distance >= 0) & (((distance.clamp(min=0) >> r) & 1) == 1)
        start = (at - 2**r).clamp(min=0)
        moved = table.reshape(-1)[(start * batch + rows) * num_vertices + vertex]
        vertex = torch.where(step_back, moved, vertex)
        at = torch.where(step_back, start, at)
    return torch.where(distance >= 0, vertex, -1)


if triton is not None:

    @triton.jit
    def _register_recursion(
        row_links, scores, backpointers, row, size, num_vertices, num_steps, batch, stride_u, stride_v,
        BLOCK: tl.constexpr, TAIL_BLOCK: tl.constexpr,
    ):  # fmt: skip
        """The recursion over a row's first `size` <= BLOCK vertices with the [size, size] matrix loaded once,
        transposed ([v, u]: the max runs along a row), held in registers with alpha for every step; vertices
        from BLOCK to num_vertices (a padded width past the tile) are written as holding no path: -inf, 0."""
        vertex = tl.arange(0, BLOCK)
        in_graph = vertex < size
        tile = tl.load(
            row_links + vertex[:, None] * stride_v + vertex[None, :] * stride_u,
            mask=in_graph[:, None] & in_graph[None, :],
            other=float("-inf"),
        )
        alpha = tl.load(scores + row * num_vertices + vertex, mask=in_graph, other=float("-inf"))
        tail = tl.arange(0, TAIL_BLOCK)
        for step in range(1, num_steps):
            best, best_u = tl.max(
                alpha[None, :] + tile, axis=1, return_indices=True, return_indices_tie_break_left=True
            )
            current = scores + (step * batch + row) * num_vertices
            pointers = backpointers + ((step - 1) * batch + row) * num_vertices
            tl.store(current + vertex, best, mask=vertex < num_vertices)
            tl.store(pointers + vertex, best_u.to(tl.int64), mask=vertex < num_vertices)
            for start in range(BLOCK, num_vertices, TAIL_BLOCK):
                v = start + tail
                tl.store(current + v, tl.full([TAIL_BLOCK], float("-inf"), tl.float32), mask=v < num_vertices)
                tl.store(pointers + v, tl.zeros([TAIL_BLOCK], tl.int64), mask=v < num_vertices)
            alpha = best  # v of this step is u of the next

    @triton.jit
    def _viterbi_forward_kernel(
        links,
        scores,
        backpointers,
        graph_sizes,
        num_vertices,
        num_steps,
        batch,
        stride_b,
        stride_u,
        stride_v,
        BLOCK_U: tl.constexpr,
        BLOCK_V: tl.constexpr,
        SINGLE_TILE: tl.constexpr,
        SIZED: tl.constexpr,
        REGISTER_BLOCK: tl.constexpr,
        SMALL_BLOCK: tl.constexpr,
    ):
        """One program per batch row: every step s reads scores[s - 1] and writes scores[s], backpointers[s - 1]
        (in the tiled loop the barrier makes a step's writes visible to the whole program before the next step
        reads them). SIZED: a row whose graph (`graph_sizes`) fits SMALL_BLOCK or REGISTER_BLOCK vertices runs
        the register recursion on that tile even when the padded width is larger, and writes the rest as the
        recursion would find it: no path (-inf), first index 0."""
        row = tl.program_id(0)
        u_offsets = tl.arange(0, BLOCK_U)
        v_offsets = tl.arange(0, BLOCK_V)
        row_links = links + row * stride_b
        if SIZED:
            size = tl.load(graph_sizes + row)
            if size <= REGISTER_BLOCK:
                if size <= SMALL_BLOCK:  # a quarter of the tile's registers: ~0.4 us a step against ~0.65
                    _register_recursion(
                        row_links, scores, backpointers, row, size, num_vertices, num_steps, batch, stride_u,
                        stride_v, SMALL_BLOCK, BLOCK_V,
                    )  # fmt: skip
                else:
                    _register_recursion(
                        row_links, scores, backpointers, row, size, num_vertices, num_steps, batch, stride_u,
                        stride_v, REGISTER_BLOCK, BLOCK_V,
                    )  # fmt: skip
                return
        if SINGLE_TILE:  # the whole [K, K] matrix fits one tile (BLOCK_U == BLOCK_V)
            _register_recursion(
                row_links, scores, backpointers, row, num_vertices, num_vertices, num_steps, batch, stride_u,
                stride_v, BLOCK_U, BLOCK_V,
            )  # fmt: skip
            return
        for step in range(1, num_steps):
            previous = scores + ((step - 1) * batch + row) * num_vertices
            current = scores + (step * batch + row) * num_vertices
            pointers = backpointers + ((step - 1) * batch + row) * num_vertices
            for v_start in range(0, num_vertices, BLOCK_V):
                v = v_start + v_offsets
                v_in = v < num_vertices
                best = tl.full([BLOCK_V], float("-inf"), tl.float32)
                best_u = tl.zeros([BLOCK_V], tl.int64)
                for u_start in range(0, num_vertices, BLOCK_U):
                    u = u_start + u_offsets
                    u_in = u < num_vertices
                    alpha = tl.load(previous + u, mask=u_in, other=float("-inf"))
                    tile = tl.load(
                        row_links + u[:, None] * stride_u + v[None, :] * stride_v,
                        mask=u_in[:, None] & v_in[None, :],
                        other=float("-inf"),
                    )
                    tile_best, tile_u = tl.max(
                        alpha[:, None] + tile, axis=0, return_indices=True, return_indices_tie_break_left=True
                    )
                    better = tile_best > best  # strict: an earlier tile keeps a tie (the first index)
                    best = tl.where(better, tile_best, best)
                    best_u = tl.where(better, tile_u.to(tl.int64) + u_start, best_u)
                tl.store(current + v, best, mask=v_in)
                tl.store(pointers + v, best_u, mask=v_in)
            tl.debug_barrier()

    @triton.jit
    def _viterbi_backtrack_kernel(
        backpointers, last_vertex, num_emitted, path, num_vertices, num_steps, batch
    ):
        """One program per batch row walks from position num_emitted - 1 back to 0 (-1 past the end)."""
        row = tl.program_id(0)
        emitted = tl.load(num_emitted + row)
        vertex = tl.load(last_vertex + row)
        for i in range(0, num_steps):
            position = num_steps - 1 - i
            on_path = position < emitted
            tl.store(path + row * num_steps + position, tl.where(on_path, vertex, -1))
            follow = on_path & (position > 0)
            offset = ((position - 1) * batch + row) * num_vertices + vertex
            earlier = tl.load(backpointers + offset, mask=follow, other=0)
            vertex = tl.where(follow, earlier, vertex)


@torch.library.custom_op("genloom_text::viterbi_forward", mutates_args=())
def viterbi_forward(
    step_links: Tensor, alpha: Tensor, num_steps: int, graph_sizes: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """step_links [B, K, K], alpha [B, K] -> (scores [num_steps, B, K], backpointers [num_steps - 1, B, K]).
    `graph_sizes` [B] (optional): each row's vertex count n, when every link into or out of a vertex >= n and
    alpha there are -inf (a padded DAG): the kernel may then skip those vertices (same results)."""
    return viterbi_forward_reference(step_links, alpha, num_steps)


def viterbi_forward_triton(
    step_links: Tensor, alpha: Tensor, num_steps: int, graph_sizes: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """`viterbi_forward_reference` by the Triton kernel (float32; CUDA, or CPU under TRITON_INTERPRET=1). With
    `graph_sizes`, each row runs on the smallest register tile its graph fits (SMALL_TILE_MAX or
    SINGLE_TILE_MAX vertices) whatever the padded width: a long padded batch-1 source keeps ~0.65 us a step on
    an H100 instead of several, a short one in a wider padded width ~0.4."""
    batch, num_vertices = alpha.shape
    scores = torch.empty((num_steps, batch, num_vertices), dtype=alpha.dtype, device=alpha.device)
    scores[0].copy_(alpha)
    backpointers = torch.empty((num_steps - 1, batch, num_vertices), dtype=torch.long, device=alpha.device)
    if num_steps > 1 and batch > 0:
        width = triton.next_power_of_2(num_vertices)
        single = width <= SINGLE_TILE_MAX
        sized = graph_sizes is not None and width > SMALL_TILE_MAX
        _viterbi_forward_kernel[(batch,)](
            step_links, scores, backpointers, graph_sizes.contiguous() if sized else scores, num_vertices,
            num_steps, batch, *step_links.stride(),
            BLOCK_U=width if single else FORWARD_BLOCK_U, BLOCK_V=width if single else min(FORWARD_MAX_BLOCK_V, width),
            SINGLE_TILE=single, SIZED=sized, REGISTER_BLOCK=SINGLE_TILE_MAX, SMALL_BLOCK=SMALL_TILE_MAX,
            num_warps=8,
        )  # fmt: skip
    return scores, backpointers


@viterbi_forward.register_kernel("cuda")
def _viterbi_forward_cuda(
    step_links: Tensor, alpha: Tensor, num_steps: int, graph_sizes: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    if triton is None or step_links.dtype != torch.float32 or alpha.dtype != torch.float32:
        return viterbi_forward_reference(step_links, alpha, num_steps)
    return viterbi_forward_triton(step_links, alpha, num_steps, graph_sizes)


@viterbi_forward.register_fake
def _viterbi_forward_fake(
    step_links: Tensor, alpha: Tensor, num_steps: int, graph_sizes: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    batch, num_vertices = alpha.shape
    return (
        alpha.new_empty((num_steps, batch, num_vertices)),
        alpha.new_empty((num_steps - 1, batch, num_vertices), dtype=torch.long),
    )


@torch.library.custom_op("genloom_text::viterbi_backtrack", mutates_args=())
def viterbi_backtrack(
    backpointers: Tensor, last_vertex: Tensor, num_emitted: Tensor, num_steps: int
) -> Tensor:
    """backpointers [S - 1, B, K], last_vertex / num_emitted [B] -> the vertex path [B, S], -1 past each end."""
    return follow_backpointers_reference(backpointers, last_vertex, num_emitted, num_steps)


def follow_backpointers_triton(
    backpointers: Tensor, last_vertex: Tensor, num_emitted: Tensor, num_steps: int
) -> Tensor:
    """`follow_backpointers_reference` by the Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1)."""
    batch = last_vertex.shape[0]
    path = torch.empty((batch, num_steps), dtype=torch.long, device=last_vertex.device)
    if batch > 0:
        _viterbi_backtrack_kernel[(batch,)](
            backpointers.contiguous(), last_vertex.long().contiguous(), num_emitted.long().contiguous(), path,
            backpointers.shape[-1] if backpointers.numel() else 1, num_steps, batch,
        )  # fmt: skip
    return path


@viterbi_backtrack.register_kernel("cuda")
def _viterbi_backtrack_cuda(
    backpointers: Tensor, last_vertex: Tensor, num_emitted: Tensor, num_steps: int
) -> Tensor:
    if triton is None:
        return follow_backpointers_reference(backpointers, last_vertex, num_emitted, num_steps)
    return follow_backpointers_triton(backpointers, last_vertex, num_emitted, num_steps)


@viterbi_backtrack.register_fake
def _viterbi_backtrack_fake(
    backpointers: Tensor, last_vertex: Tensor, num_emitted: Tensor, num_steps: int
) -> Tensor:
    return last_vertex.new_empty((last_vertex.shape[0], num_steps), dtype=torch.long)
