"""The Viterbi kernels (`genloom.text.viterbi_ops`) against the torch reference: exactly equal scores,
backpointers (first index on ties) and paths; on the CPU through Triton's interpreter, on a GPU natively."""

from __future__ import annotations

import textwrap

import pytest
import torch

from genloom.text.viterbi_ops import (
    follow_backpointers_reference,
    viterbi_backtrack,
    viterbi_forward,
    viterbi_forward_reference,
)

# (batch, vertices, steps): vertex counts off the tile sizes (32 x 128), several target tiles, one step only
SHAPES = [(3, 45, 11), (2, 150, 6), (1, 7, 1), (2, 5, 2), (4, 33, 9)]


def _inputs(batch: int, vertices: int, seed: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Integer-valued scores (many ties) with -inf holes, as a forward-only DAG's transitions have."""
    g = torch.Generator().manual_seed(seed)
    links = torch.randint(-4, 1, (batch, vertices, vertices), generator=g).float()
    links[links == -4] = float("-inf")
    alpha = torch.randint(-3, 1, (batch, vertices), generator=g).float()
    return links.to(device), alpha.to(device)


def test_custom_ops_on_the_cpu_are_the_reference() -> None:
    links, alpha = _inputs(3, 45, seed=0)
    scores, backpointers = viterbi_forward(links, alpha, 11)
    ref_scores, ref_backpointers = viterbi_forward_reference(links, alpha, 11)
    assert torch.equal(scores, ref_scores) and torch.equal(backpointers, ref_backpointers)
    assert scores.shape == (11, 3, 45) and backpointers.shape == (10, 3, 45)
    # the recursion itself, element by element for one row and step
    expected = (ref_scores[3, 1].unsqueeze(-1) + links[1]).max(dim=0)
    assert torch.equal(ref_scores[4, 1], expected.values) and torch.equal(
        ref_backpointers[3, 1], expected.indices
    )
    last, emitted = torch.tensor([4, 0, 44]), torch.tensor([11, 1, 5])
    path = viterbi_backtrack(backpointers, last, emitted, 11)
    assert torch.equal(path, follow_backpointers_reference(backpointers, last, emitted, 11))
    assert path[1].tolist() == [0] + [-1] * 10 and path[2, 4] == 44 and (path[2, 5:] == -1).all()


INTERPRETED_CHECK = """
import torch

from genloom.text import viterbi_ops as ops

g = torch.Generator().manual_seed(1)
for batch, vertices, steps in SHAPES:
    links = torch.randint(-4, 1, (batch, vertices, vertices), generator=g).float()
    links[links == -4] = float("-inf")
    alpha = torch.randint(-3, 1, (batch, vertices), generator=g).float()
    ref = ops.viterbi_forward_reference(links, alpha, steps)
    got = ops.viterbi_forward_triton(links, alpha, steps)
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1]), (batch, vertices, steps)
    last = torch.randint(0, vertices, (batch,), generator=g)
    emitted = torch.randint(1, steps + 1, (batch,), generator=g)
    emitted[0] = steps
    expected = ops.follow_backpointers_reference(ref[1], last, emitted, steps)
    assert torch.equal(ops.follow_backpointers_triton(ref[1], last, emitted, steps), expected)
# a padded graph (every link touching a vertex past the row's size -inf): rows that fit the register tile take
# it, the 150-vertex row the tiled loop, one launch; the same tables
links = torch.randint(-4, 1, (4, 150, 150), generator=g).float()
sizes = torch.tensor([100, 150, 128, 40])
outside = torch.arange(150) >= sizes[:, None]  # [B, K]
links = links.masked_fill(outside[:, :, None] | outside[:, None, :], float("-inf"))
links[links == -4] = float("-inf")
alpha = torch.randint(-3, 1, (4, 150), generator=g).float().masked_fill(outside, float("-inf"))
ref = ops.viterbi_forward_reference(links, alpha, 40)
got = ops.viterbi_forward_triton(links, alpha, 40, sizes)
assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
# a padded width within the 128 tile: the 40-vertex rows take the 64 tile
ref = ops.viterbi_forward_reference(links[:, :100, :100], alpha[:, :100], 30)
got = ops.viterbi_forward_triton(links[:, :100, :100].contiguous(), alpha[:, :100].contiguous(), 30, sizes.clamp(max=100))
assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
print("kernels equal the reference")
"""


def test_triton_kernels_equal_the_reference_in_the_interpreter(run_triton_interpreted) -> None:
    out = run_triton_interpreted(f"SHAPES = {SHAPES!r}\n" + textwrap.dedent(INTERPRETED_CHECK))
    assert "kernels equal the reference" in out


@pytest.mark.gpu
@pytest.mark.parametrize(("batch", "vertices", "steps"), [*SHAPES, (64, 300, 75)])
def test_cuda_kernels_equal_the_reference(batch: int, vertices: int, steps: int) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    links, alpha = _inputs(batch, vertices, seed=vertices, device="cuda")
    sizes = torch.randint(1, vertices + 1, (batch,), device="cuda")
    sizes[0] = min(vertices, 120)  # at least one row that fits the register tile
    outside = torch.arange(vertices, device="cuda") >= sizes[:, None]
    links = links.masked_fill(outside[:, :, None] | outside[:, None, :], float("-inf"))
    alpha = alpha.masked_fill(outside, float("-inf"))
    sized = viterbi_forward(links, alpha, steps, sizes)  # a padded graph: rows that fit run in registers
    scores, backpointers = viterbi_forward(links, alpha, steps)
    assert torch.equal(sized[0], scores) and torch.equal(sized[1], backpointers)
    ref_scores, ref_backpointers = viterbi_forward_reference(links, alpha, steps)
    assert torch.equal(scores, ref_scores) and torch.equal(backpointers, ref_backpointers)
    g = torch.Generator().manual_seed(batch)
    last = torch.randint(0, vertices, (batch,), generator=g).cuda()
    emitted = torch.randint(1, steps + 1, (batch,), generator=g).cuda()
    path = viterbi_backtrack(backpointers, last, emitted, steps)
    assert torch.equal(path, follow_backpointers_reference(backpointers, last, emitted, steps))


@pytest.mark.parametrize("single_tile", [True, False])
def test_viterbi_kernels_compile_for_hopper(compile_triton_for_hopper, single_tile: bool) -> None:
    from genloom.text import viterbi_ops as ops

    scalars = dict.fromkeys(["num_vertices", "num_steps", "batch", "stride_b", "stride_u", "stride_v"], "i32")
    blocks = {"BLOCK_U": 128, "BLOCK_V": 128} if single_tile else {"BLOCK_U": 32, "BLOCK_V": 256}
    forward = compile_triton_for_hopper(
        ops._viterbi_forward_kernel,
        {"links": "*fp32", "scores": "*fp32", "backpointers": "*i64", "graph_sizes": "*i64", **scalars},
        {
            **blocks,
            "SINGLE_TILE": single_tile,
            "SIZED": True,
            "REGISTER_BLOCK": ops.SINGLE_TILE_MAX,
            "SMALL_BLOCK": ops.SMALL_TILE_MAX,
        },
    )
    backtrack = compile_triton_for_hopper(
        ops._viterbi_backtrack_kernel,
        {"backpointers": "*i64", "last_vertex": "*i64", "num_emitted": "*i64", "path": "*i64",
         **dict.fromkeys(["num_vertices", "num_steps", "batch"], "i32")},
        {},
    )  # fmt: skip
    assert len(forward) > 1000 and len(backtrack) > 1000
