"""Diffusion forecaster: a tiny denoiser learns to continue sines; save/load round trip; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.models.diffusion import DiffusionConfig, DiffusionForecaster
from genloom.timeseries.pretrained import load_forecaster, save_forecaster


def _sines(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    t = torch.arange(length).float()
    phase = torch.rand(n, 1, generator=generator) * 2 * np.pi
    amp = 1 + 4 * torch.rand(n, 1, generator=generator)
    level = 20 * torch.rand(n, 1, generator=generator)
    return level + amp * torch.sin(2 * np.pi * t / 12 + phase)


@pytest.mark.parametrize("n_steps,eta", [(None, 1.0), (7, 1.0), (7, 0.0)])
def test_oracle_denoiser_recovers_the_future_through_the_core_sampler(n_steps, eta):
    """A denoiser that knows x0 returns the exact noise of x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps at the
    timestep it is given: the chain must then end on x0 (in the history's units) for any respacing, which
    holds only if the timesteps the sampler passes match the schedule arrays it steps with."""
    model = DiffusionForecaster(DiffusionConfig(context_len=16, pred_len=6, hidden=8, n_layers=1, n_steps=40))
    history = torch.randn(3, 16, generator=torch.Generator().manual_seed(0)).cumsum(1) * 2 + 30
    future = history[:, -1:] + torch.linspace(0.5, 3.0, 6)
    _, loc, scale = model._prompt(history, None)
    x0 = (future - loc) / scale
    alphas_cumprod = model.diffusion.train_alphas_cumprod

    def oracle(noisy, t, prompt):
        a = alphas_cumprod[t].float()[:, None]
        return (noisy - a.sqrt() * x0) / (1 - a).sqrt()

    model.denoise = oracle
    window = model._sample_window(history, torch.Generator().manual_seed(1), n_steps, eta)
    torch.testing.assert_close(window, future, rtol=1e-4, atol=1e-3)
    wrong = lambda noisy, t, prompt: oracle(noisy, (t + 5).clamp_max(39), prompt)  # noqa: E731
    model.denoise = wrong
    off = model._sample_window(history, torch.Generator().manual_seed(1), n_steps, eta)
    assert (off - future).abs().max() > 1e-2  # the check above can fail


def test_trained_denoiser_continues_a_sine(tmp_path):
    torch.manual_seed(0)
    model = DiffusionForecaster(
        DiffusionConfig(context_len=36, pred_len=12, hidden=64, n_layers=2, n_steps=50)
    )
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(400):
        batch = _sines(64, 48, gen)
        loss = model.training_loss(batch[:, :36], batch[:, 36:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = _sines(8, 60, torch.Generator().manual_seed(123)).numpy()
    result = model.forecast(test[:, :36], 24, num_samples=16, seed=0)  # two chained windows
    err = np.mean((result.median - test[:, 36:]) ** 2)
    flat = np.mean((test[:, 35:36] - test[:, 36:]) ** 2)  # naive: repeat the last value
    assert err < 0.25 * flat, (err, flat)
    assert result.quantiles.shape == (3, 8, 24) and np.all(result.quantiles[0] <= result.quantiles[2])
    save_forecaster(model, tmp_path / "diff")
    again = load_forecaster(tmp_path / "diff")
    np.testing.assert_allclose(
        again.forecast(test[:, :36], 12, seed=3).samples,
        model.forecast(test[:, :36], 12, seed=3).samples,
        rtol=1e-5,
        atol=1e-5,
    )


def test_diffusion_refuses_bad_context():
    model = DiffusionForecaster(DiffusionConfig(context_len=8, pred_len=4, hidden=16, n_layers=1, n_steps=10))
    with pytest.raises(SeriesInputError, match="finite"):
        model.forecast(np.array([1.0, np.nan, 3.0]), 4)
    with pytest.raises(SeriesInputError, match="horizon must be positive"):
        model.forecast(np.arange(10.0), 0)
    with pytest.raises(SeriesInputError, match="n_steps must be >= 1"):
        model.forecast(np.arange(10.0), 4, n_steps=0)
