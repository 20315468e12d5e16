"""DiagonalGaussian / KLBottleneck: moments split, sampling statistics, KL and NLL, latent scaling."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from genloom.core.tokenizers import MAR_KL16_SCALE, DiagonalGaussian, KLBottleneck, TokenizerInputError


def moments(batch: int = 2, channels: int = 3, size: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 2 * channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_from_moments_splits_mean_then_logvar_and_clamps():
    m = moments()
    m[:, 3:] = m[:, 3:].clamp(-5, 5)
    m[0, 3, 0, 0] = 50.0
    posterior = DiagonalGaussian.from_moments(m)
    assert torch.equal(posterior.mean, m[:, :3])
    assert posterior.logvar[0, 0, 0, 0] == 20.0
    torch.testing.assert_close(posterior.std, torch.exp(0.5 * posterior.logvar))
    assert torch.equal(posterior.mode(), posterior.mean)


def test_sample_statistics_match_mean_and_std():
    mean = torch.tensor([[-2.0, 0.5, 3.0]])
    logvar = torch.tensor([[0.0, -2.0, 1.0]])
    posterior = DiagonalGaussian(mean.expand(20000, 3), logvar.expand(20000, 3))
    samples = posterior.sample(torch.Generator().manual_seed(0))
    std = torch.exp(0.5 * logvar)[0]
    # 20000 samples: the standard error of the mean is std / 141, of the std about std / 200
    torch.testing.assert_close(samples.mean(0), mean[0], atol=float(4 * std.max() / 141), rtol=0)
    torch.testing.assert_close(samples.std(0), std, rtol=0.03, atol=0)
    again = posterior.sample(torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)


def test_kl_and_nll_match_torch_distributions():
    a = DiagonalGaussian.from_moments(moments(seed=1))
    b = DiagonalGaussian.from_moments(moments(seed=2))
    normal_a = Normal(a.mean, a.std)
    reference_prior = kl_divergence(normal_a, Normal(torch.zeros_like(a.mean), torch.ones_like(a.mean)))
    torch.testing.assert_close(a.kl(), reference_prior.sum(dim=(1, 2, 3)))
    reference_pair = kl_divergence(normal_a, Normal(b.mean, b.std)).sum(dim=(1, 2, 3))
    torch.testing.assert_close(a.kl(b), reference_pair, rtol=1e-4, atol=1e-4)
    x = torch.randn(a.mean.shape)
    torch.testing.assert_close(a.nll(x), -normal_a.log_prob(x).sum(dim=(1, 2, 3)), rtol=1e-5, atol=1e-4)
    standard = DiagonalGaussian(torch.zeros(2, 5), torch.zeros(2, 5))
    assert torch.equal(standard.kl(), torch.zeros(2))
    assert torch.allclose(standard.nll(torch.zeros(2, 5)), torch.full((2,), 2.5 * math.log(2 * math.pi)))


def test_deterministic_posterior_is_a_point_mass():
    posterior = DiagonalGaussian.from_moments(moments(), deterministic=True)
    assert torch.equal(posterior.sample(), posterior.mean)
    assert torch.equal(posterior.kl(), torch.zeros(2))


def test_bottleneck_scales_latents_and_inverts():
    bottleneck = KLBottleneck(latent_dim=3)
    assert bottleneck.scale_factor == MAR_KL16_SCALE == 0.2325
    m = moments()
    out = bottleneck.eval()(m)
    torch.testing.assert_close(out.latents, m[:, :3] * 0.2325)
    torch.testing.assert_close(bottleneck.unscale(out.latents), m[:, :3])
    torch.testing.assert_close(out.kl, DiagonalGaussian.from_moments(m).kl().mean())
    trained = bottleneck.train()(m, generator=torch.Generator().manual_seed(0))
    expected = DiagonalGaussian.from_moments(m).sample(torch.Generator().manual_seed(0)) * 0.2325
    torch.testing.assert_close(trained.latents, expected)
    shifted = KLBottleneck(latent_dim=3, scale_factor=2.0, shift_factor=0.5)
    z = torch.randn(4, 3)
    torch.testing.assert_close(shifted.scale(z), (z - 0.5) * 2.0)
    torch.testing.assert_close(shifted.unscale(shifted.scale(z)), z)


def test_gradients_flow_through_the_reparameterised_sample():
    m = moments().requires_grad_(True)
    out = KLBottleneck(latent_dim=3).train()(m)
    (out.latents.sum() + out.kl).backward()
    assert m.grad[:, :3].abs().sum() > 0 and m.grad[:, 3:].abs().sum() > 0


def test_bad_moments_are_rejected():
    with pytest.raises(TokenizerInputError, match="even channel count"):
        DiagonalGaussian.from_moments(torch.randn(2, 5, 4))
    with pytest.raises(TokenizerInputError, match="6 channels"):
        KLBottleneck(latent_dim=3)(torch.randn(2, 8, 4, 4))
    with pytest.raises(TokenizerInputError, match="same shape"):
        DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 4))
