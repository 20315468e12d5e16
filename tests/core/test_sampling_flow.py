"""Flow matching: with the exact velocity of a Gaussian path the samplers recover the target, Heun
converges faster than Euler, the training helpers are consistent."""

from __future__ import annotations

import pytest
import torch

from genloom.core.sampling.errors import SamplingError
from genloom.core.sampling.flow import FlowMatchSampler, flow_interpolate, flow_velocity_target

MU, SIGMA = -0.7, 2.0


def exact_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Marginal velocity of x_t = (1 - t) z + t y, z ~ N(0, 1), y ~ N(MU, SIGMA^2): x_t = m_t + s_t eps."""
    t = t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    var = (1 - t) ** 2 + t**2 * SIGMA**2
    return MU + (t * SIGMA**2 - (1 - t)) / var * (x - t * MU)


@pytest.mark.parametrize(("method", "steps"), [("euler", 200), ("heun", 20)])
def test_exact_velocity_recovers_target_distribution(method: str, steps: int) -> None:
    sampler = FlowMatchSampler(method=method)
    sampler.set_steps(steps)
    noise = torch.randn(20000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = sampler.sample(exact_velocity, noise)
    assert x.mean().item() == pytest.approx(MU, abs=0.05)
    assert x.std().item() == pytest.approx(SIGMA, rel=0.02)
    # the flow is the monotone map z -> MU + SIGMA z
    torch.testing.assert_close(x, MU + SIGMA * noise, atol=0.1, rtol=0)


def test_heun_beats_euler_at_equal_steps() -> None:
    z = torch.linspace(-3, 3, 31, dtype=torch.float64)[:, None]
    target = MU + SIGMA * z
    for steps in (4, 8, 16):
        errors = {}
        for method in ("euler", "heun"):
            sampler = FlowMatchSampler(method=method)
            sampler.set_steps(steps)
            errors[method] = (sampler.sample(exact_velocity, z) - target).abs().max().item()
        assert errors["heun"] < errors["euler"] / 3, (steps, errors)
    # second order: doubling the steps cuts Heun's error by about 4
    errs = []
    for steps in (16, 32):
        sampler = FlowMatchSampler(method="heun")
        sampler.set_steps(steps)
        errs.append((sampler.sample(exact_velocity, z) - target).abs().max().item())
    assert 3.0 < errs[0] / errs[1] < 5.0


def test_shifted_grid_and_interpolation() -> None:
    sampler = FlowMatchSampler(shift=3.0)
    sampler.set_steps(4)
    times = sampler.times.tolist()
    assert times[0] == 0.0 and times[-1] == 1.0 and times == sorted(times)
    sigma = 0.75
    assert times[1] == pytest.approx(1 - 3 * sigma / (1 + 2 * sigma))
    noise, data = torch.randn(3, 4), torch.randn(3, 4)
    t = torch.tensor([0.0, 0.5, 1.0])
    xt = flow_interpolate(noise, data, t)
    torch.testing.assert_close(xt[0], noise[0])
    torch.testing.assert_close(xt[2], data[2])
    # the straight path's time derivative is the target velocity
    dt = 1e-3
    dx = (flow_interpolate(noise, data, t + dt) - xt) / dt
    torch.testing.assert_close(dx, flow_velocity_target(noise, data), atol=1e-3, rtol=1e-3)


def test_flow_errors() -> None:
    sampler = FlowMatchSampler(method="heun")
    with pytest.raises(SamplingError, match="set_steps"):
        sampler.step(torch.zeros(2, 2), 0, torch.zeros(2, 2))
    sampler.set_steps(2)
    with pytest.raises(SamplingError, match="velocity_fn"):
        sampler.step(torch.zeros(2, 2), 0, torch.zeros(2, 2))
    with pytest.raises(SamplingError, match="shape"):
        sampler.step(torch.zeros(2, 3), 0, torch.zeros(2, 2))
    with pytest.raises(SamplingError, match="method"):
        FlowMatchSampler(method="rk4")  # type: ignore[arg-type]
