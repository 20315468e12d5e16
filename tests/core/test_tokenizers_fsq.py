"""FSQ: exact level grids, the index <-> code bijection and the implicit codebook."""

from __future__ import annotations

import itertools

import pytest
import torch

from genloom.core.tokenizers import FSQ


def expected_grid(level: int) -> torch.Tensor:
    half = level // 2
    return (torch.arange(level, dtype=torch.float32) - half) / half


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [2, 3, 4, 7]])
def test_every_code_value_lies_on_the_expected_grid_and_every_level_is_reached(levels):
    q = FSQ(levels=levels)
    assert q.codebook_size == torch.tensor(levels).prod().item()
    z = torch.randn(4000, len(levels), generator=torch.Generator().manual_seed(0)) * 3
    codes = q(z).codes
    for channel, level in enumerate(levels):
        values = codes[:, channel].unique()
        torch.testing.assert_close(values, expected_grid(level), rtol=0, atol=0)


def test_levels_8_5_5_5_grid_values():
    q = FSQ(levels=[8, 5, 5, 5])
    assert q.codebook_size == 1000
    codebook = q.implicit_codebook()
    assert codebook[:, 0].unique().tolist() == [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75]
    assert codebook[:, 1].unique().tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_indices_and_codes_are_a_bijection():
    q = FSQ(levels=[4, 3, 5])
    indices = torch.arange(q.codebook_size)
    codes = q.indices_to_codes(indices)
    assert torch.unique(codes, dim=0).shape[0] == q.codebook_size
    assert torch.equal(q.codes_to_indices(codes), indices)
    # mixed radix with the first channel least significant
    grid = [expected_grid(level) for level in (4, 3, 5)]
    for index, (c, b, a) in enumerate(itertools.product(range(5), range(3), range(4))):
        if index % 7 == 0:
            torch.testing.assert_close(codes[index], torch.stack([grid[0][a], grid[1][b], grid[2][c]]))


def test_forward_indices_match_rounding_of_the_bound():
    q = FSQ(levels=[5, 5])
    z = torch.tensor([[0.0, 10.0], [-10.0, 0.3]])
    out = q(z)
    torch.testing.assert_close(out.codes, torch.tensor([[0.0, 1.0], [-1.0, 0.5]]))
    assert out.indices.tolist() == [2 + 5 * 4, 0 + 5 * 3]
    assert out.loss.item() == 0.0


def test_projection_and_channel_first_layout():
    q = FSQ(levels=[8, 6, 5], dim=32, channel_dim=1)
    out = q(torch.randn(2, 32, 4, 4))
    assert out.codes.shape == (2, 32, 4, 4) and out.indices.shape == (2, 4, 4)
    assert q.project_in.in_features == 32 and q.project_in.out_features == 3


def test_invalid_levels_are_rejected():
    with pytest.raises(ValueError, match="levels"):
        FSQ(levels=[8, 1])
    with pytest.raises(ValueError, match="levels"):
        FSQ(levels=[])
