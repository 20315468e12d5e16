"""`upsample_bicubic` (two matrix products) equals PyTorch's bicubic interpolation, gradients included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genloom.core.nn.resample import bicubic_matrix, upsample_bicubic


@pytest.mark.parametrize("shape,size", [((2, 3, 1, 1), (16, 16)), ((2, 3, 3, 5), (16, 13)),
                                        ((1, 4, 13, 13), (16, 16)), ((2, 2, 16, 16), (16, 16)),
                                        ((1, 2, 32, 12), (8, 30))])  # fmt: skip
def test_upsample_bicubic_equals_interpolate(shape: tuple, size: tuple) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64).float()
    expected = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    torch.testing.assert_close(upsample_bicubic(x, size), expected, atol=3e-6, rtol=0)


def test_upsample_bicubic_gradient_equals_interpolate() -> None:
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    weight = torch.randn(2, 3, 16, 16)
    (F.interpolate(x, size=(16, 16), mode="bicubic") * weight).sum().backward()
    expected, x.grad = x.grad, None
    (upsample_bicubic(x, (16, 16)) * weight).sum().backward()
    torch.testing.assert_close(x.grad, expected, atol=1e-5, rtol=0)


def test_bicubic_matrix_rows_sum_to_one_and_bad_input_is_refused() -> None:
    matrix = bicubic_matrix(5, 16, torch.device("cpu"))
    assert matrix.shape == (16, 5)
    torch.testing.assert_close(matrix.sum(1), torch.ones(16, dtype=torch.float64), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="expected a \\[B, C, H, W\\]"):
        upsample_bicubic(torch.zeros(3, 4, 4), (8, 8))
    with pytest.raises(ValueError, match="sizes must be positive"):
        bicubic_matrix(0, 4, torch.device("cpu"))
