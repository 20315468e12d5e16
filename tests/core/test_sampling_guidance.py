"""Classifier-free guidance: the combination formula, schedules at known points, batched helpers."""

from __future__ import annotations

import math

import pytest
import torch

from genloom.core.sampling.errors import SamplingError
from genloom.core.sampling.guidance import (
    GuidanceSchedule,
    apply_guidance,
    double_batch,
    guide_batched,
    split_batch,
)


def test_guidance_formula_and_special_scales() -> None:
    cond, uncond = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(apply_guidance(cond, uncond, 1.0), cond)
    torch.testing.assert_close(apply_guidance(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(apply_guidance(cond, uncond, 4.0), uncond + 4.0 * (cond - uncond))
    per_row = torch.tensor([1.0, 0.0, 2.0])
    out = apply_guidance(cond, uncond, per_row)
    torch.testing.assert_close(out[0], cond[0])
    torch.testing.assert_close(out[1], uncond[1])
    torch.testing.assert_close(out[2], 2 * cond[2] - uncond[2])


def test_schedules_at_known_points() -> None:
    mar = GuidanceSchedule(scale=4.0, kind="linear", start=1.0)
    assert mar.at(0.0) == 1.0 and mar.at(1.0) == 4.0 and mar.at(0.5) == pytest.approx(2.5)
    var = GuidanceSchedule(scale=3.0, kind="linear", start=0.0)
    assert [var.at_step(i, 4) for i in range(4)] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    cos = GuidanceSchedule(scale=3.0, kind="cosine", start=1.0)
    assert cos.at(0.5) == pytest.approx(2.0) and cos.at(0.25) == pytest.approx(
        1 + 2 * (1 - math.cos(math.pi / 4)) / 2
    )
    power = GuidanceSchedule(scale=5.0, kind="power", start=1.0, exponent=2.0)
    assert power.at(0.5) == pytest.approx(2.0)
    pc = GuidanceSchedule(scale=5.0, kind="power_cosine", start=1.0, exponent=2.0)
    assert pc.at(0.5) == pytest.approx(1 + 4 * (1 - math.cos(math.pi * 0.25)) / 2)
    assert GuidanceSchedule(scale=2.5).at(0.3) == 2.5
    per_row = mar.at(torch.tensor([0.0, 1.0 / 3.0, 1.0]))
    torch.testing.assert_close(per_row, torch.tensor([1.0, 2.0, 4.0]))


def test_batched_helpers_round_trip() -> None:
    cond_in, uncond_in = torch.randn(2, 4), torch.randn(2, 4)
    both = double_batch(cond_in, uncond_in)
    assert both.shape == (4, 4)
    c, u = split_batch(both)
    assert torch.equal(c, cond_in) and torch.equal(u, uncond_in)
    assert torch.equal(double_batch(cond_in), torch.cat([cond_in, cond_in]))
    torch.testing.assert_close(guide_batched(both, 3.0), uncond_in + 3.0 * (cond_in - uncond_in))


def test_bad_guidance_input_raises() -> None:
    with pytest.raises(SamplingError, match="same shape"):
        apply_guidance(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
    with pytest.raises(SamplingError, match="even"):
        split_batch(torch.zeros(3, 2))
    with pytest.raises(SamplingError, match="kind"):
        GuidanceSchedule(scale=2.0, kind="exp")  # type: ignore[arg-type]
    with pytest.raises(SamplingError, match=r"\[0, 1\]"):
        GuidanceSchedule(scale=2.0).at(1.5)
    with pytest.raises(SamplingError, match="shape"):
        apply_guidance(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3))
