"""DDPM / DDIM: MAR's schedules and one respaced step (parity), exact-score Gaussian sampling,
prediction-type consistency, timestep respacing."""

from __future__ import annotations

import math

import pytest
import torch

from genloom.core.sampling.diffusion import DDIMSampler, DDPMSampler, beta_schedule, space_timesteps
from genloom.core.sampling.errors import SamplingError

MU, SIGMA = 1.5, 0.5  # target data distribution N(MU, SIGMA^2), elementwise


def _exact_model(diffusion, prediction_type: str = "epsilon"):
    """The exact E[eps | x_t] (or v / x0) for Gaussian data, at original training timesteps."""

    def model(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        acp = diffusion.train_alphas_cumprod[timesteps].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        eps = (1 - acp).sqrt() * (x - acp.sqrt() * MU) / (acp * SIGMA**2 + 1 - acp)
        x0 = (x - (1 - acp).sqrt() * eps) / acp.sqrt()
        if prediction_type == "epsilon":
            return eps
        if prediction_type == "x0":
            return x0
        return acp.sqrt() * eps - (1 - acp).sqrt() * x0

    return model


def test_linear_and_cosine_betas() -> None:
    linear = beta_schedule("linear", 1000)
    assert linear[0].item() == pytest.approx(1e-4) and linear[-1].item() == pytest.approx(0.02)
    cosine = beta_schedule("cosine", 1000)
    assert cosine.dtype == torch.float64 and cosine[-1].item() == 0.999
    acp = torch.cumprod(1 - cosine, 0)
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert acp[499].item() == pytest.approx(f(0.5) / f(0.0), rel=1e-9)


def test_space_timesteps_semantics() -> None:
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, 8) == [0, 143, 285, 428, 571, 714, 856, 999]
    assert space_timesteps(10, "3,2") == [0, 2, 4, 5, 9]
    assert space_timesteps(100, "100") == list(range(100))
    with pytest.raises(SamplingError, match="cannot take"):
        space_timesteps(10, 20)


@pytest.mark.parity
def test_mar_schedules_match_official(parity_dir) -> None:
    from safetensors.torch import load_file

    cases = load_file(str(parity_dir("mar") / "cases.safetensors"))
    for split, steps in (("train", 1000), ("gen", 8)):
        sampler = DDPMSampler(num_train_steps=1000, beta_schedule="cosine", variance_type="learned_range")
        sampler.set_steps(steps)
        assert torch.equal(sampler.timestep_map, cases[f"sched.{split}.timestep_map"])
        for name in (
            "betas",
            "alphas_cumprod",
            "alphas_cumprod_prev",
            "posterior_variance",
            "posterior_log_variance_clipped",
            "posterior_mean_coef1",
            "posterior_mean_coef2",
        ):
            torch.testing.assert_close(
                sampler.arrays[name], cases[f"sched.{split}.{name}"], atol=1e-10, rtol=0
            )


@pytest.mark.parity
def test_mar_respaced_step_matches_official(parity_dir) -> None:
    """Recover the network output (eps, variance values) from the official x0 and log-variance, then
    check our posterior mean and variance at the same respaced timesteps (per-row step indices)."""
    from safetensors.torch import load_file

    cases = load_file(str(parity_dir("mar") / "cases.safetensors"))
    x, k = cases["diff.x"], cases["gen_step.t_respaced"]
    sampler = DDPMSampler(num_train_steps=1000, beta_schedule="cosine", variance_type="learned_range")
    sampler.set_steps(8)
    acp = sampler.arrays["alphas_cumprod"][k].float()[:, None]
    eps = (x - acp.sqrt() * cases["gen_step.pred_xstart"]) / (1 - acp).sqrt()
    min_log = sampler.arrays["posterior_log_variance_clipped"][k].float()[:, None]
    max_log = sampler.arrays["log_betas"][k].float()[:, None]
    frac = (cases["gen_step.log_variance"] - min_log) / (max_log - min_log)
    model_output = torch.cat([eps, 2 * frac - 1], dim=1)
    step_index = sampler.num_steps - 1 - k  # execution order: 0 is the noisiest step
    out = sampler.step(model_output, step_index, x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.pred_x0, cases["gen_step.pred_xstart"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.mean, cases["gen_step.mean"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.log_variance.exp(), cases["gen_step.variance"], atol=1e-4, rtol=1e-4)
    # the last step (respaced index 0) adds no noise
    last = k == 0
    torch.testing.assert_close(out.prev_sample[last], cases["gen_step.mean"][last], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("schedule", "variance_type", "steps"),
    # fixed_small loses variance and fixed_large adds some when respaced (a known discretisation bias,
    # 0.469 and 0.510 at 100 linear steps): check each where it is accurate
    [("linear", "fixed_small", 1000), ("cosine", "fixed_large", 100), ("cosine", "fixed_small", 250)],
)
def test_ddpm_with_exact_score_recovers_gaussian(schedule: str, variance_type: str, steps: int) -> None:
    sampler = DDPMSampler(num_train_steps=1000, beta_schedule=schedule, variance_type=variance_type)
    sampler.set_steps(steps)
    noise = torch.randn(10000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = sampler.sample(_exact_model(sampler), noise, generator=torch.Generator().manual_seed(1))
    assert x.mean().item() == pytest.approx(MU, abs=0.02)
    assert x.std().item() == pytest.approx(SIGMA, rel=0.025)


def test_ddim_eta0_is_deterministic_and_converges_to_the_exact_transport() -> None:
    # With the exact score the probability-flow ODE maps noise z to MU + SIGMA * z; DDIM (eta = 0) is a
    # first-order solver of it: the error shrinks with the step count.
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    errors = []
    for steps in ("ddim10", "ddim50", "ddim250", 1000):
        sampler = DDIMSampler(num_train_steps=1000, beta_schedule="cosine")
        sampler.set_steps(steps)
        a = sampler.sample(_exact_model(sampler), z, generator=torch.Generator().manual_seed(1))
        b = sampler.sample(_exact_model(sampler), z, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a, b)
        errors.append((a - (MU + SIGMA * z)).abs().max().item())
    assert errors == sorted(errors, reverse=True) and errors[-1] < 5e-3 and errors[0] > 0.1


def test_ddim_eta1_is_stochastic_and_recovers_gaussian() -> None:
    sampler = DDIMSampler(num_train_steps=1000, beta_schedule="cosine")
    sampler.set_steps(250)
    noise = torch.randn(10000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = sampler.sample(_exact_model(sampler), noise, generator=torch.Generator().manual_seed(1), eta=1.0)
    b = sampler.sample(_exact_model(sampler), noise, generator=torch.Generator().manual_seed(2), eta=1.0)
    assert not torch.allclose(a, b)
    assert a.mean().item() == pytest.approx(MU, abs=0.02)
    assert a.std().item() == pytest.approx(SIGMA, rel=0.025)


@pytest.mark.parametrize("prediction_type", ["v", "x0"])
@pytest.mark.parametrize("sampler_cls", [DDPMSampler, DDIMSampler])
def test_prediction_types_give_the_same_step(prediction_type: str, sampler_cls) -> None:
    eps_sampler = sampler_cls(beta_schedule="cosine", prediction_type="epsilon")
    other = sampler_cls(beta_schedule="cosine", prediction_type=prediction_type)
    x = torch.randn(4, 3, dtype=torch.float64)
    for sampler in (eps_sampler, other):
        sampler.set_steps(20)
    for i in (0, 7, 19):
        t = torch.full((4,), int(eps_sampler.timesteps[i]))
        a = eps_sampler.step(
            _exact_model(eps_sampler)(x, t), i, x, generator=torch.Generator().manual_seed(i)
        )
        b = other.step(
            _exact_model(other, prediction_type)(x, t), i, x, generator=torch.Generator().manual_seed(i)
        )
        torch.testing.assert_close(a.prev_sample, b.prev_sample)
        torch.testing.assert_close(a.pred_x0, b.pred_x0)


def test_training_helpers_round_trip() -> None:
    sampler = DDPMSampler(beta_schedule="cosine", prediction_type="v")
    x0, noise = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 900, 999])
    xt = sampler.add_noise(x0, noise, t)
    v = sampler.training_target(x0, noise, t)
    acp = sampler.train_alphas_cumprod[t][:, None]
    torch.testing.assert_close(acp.sqrt() * xt - (1 - acp).sqrt() * v, x0)  # x0 recovered from (x_t, v)
    torch.testing.assert_close(xt, acp.sqrt() * x0 + (1 - acp).sqrt() * noise)


def test_training_losses_mse_and_variational_bound() -> None:
    sampler = DDPMSampler(beta_schedule="cosine", variance_type="learned_range")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 4, generator=g, dtype=torch.float64) * 1.8 - 0.9
    noise = torch.randn(6, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 0, 1, 10, 500, 999])
    # eps = the true noise and v = -1 (log-variance = the posterior's): the KL terms vanish exactly
    perfect = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    losses = sampler.training_losses(perfect, x0, noise, t)
    torch.testing.assert_close(losses["mse"], torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(losses["vb"][2:], torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0)
    # at t = 0 vb is the discretised Gaussian NLL (bits/dim) of x0 under the model's posterior mean/variance
    x_t = sampler.add_noise(x0, noise, t)
    mean = (
        sampler.train_arrays["posterior_mean_coef1"][0] * x0
        + sampler.train_arrays["posterior_mean_coef2"][0] * x_t
    )
    std = sampler.train_arrays["posterior_log_variance_clipped"][0].mul(0.5).exp()
    bin_mass = torch.special.ndtr((x0 + 1 / 255 - mean) / std) - torch.special.ndtr(
        (x0 - 1 / 255 - mean) / std
    )
    expected = -bin_mass.log().mean(-1) / math.log(2)
    torch.testing.assert_close(losses["vb"][:2], expected[:2], rtol=2e-3, atol=0)
    # a wrong variance costs bits; the mean's gradient is stopped inside vb
    output = torch.cat([noise + 0.1, torch.zeros_like(noise)], dim=1).requires_grad_(True)
    worse = sampler.training_losses(output, x0, noise, t)
    assert (worse["vb"][2:] > 0).all()
    torch.testing.assert_close(worse["loss"], worse["mse"] + worse["vb"])
    worse["vb"].sum().backward()
    assert output.grad[:, :4].abs().max() == 0 and output.grad[:, 4:].abs().max() > 0


def test_diffusion_errors() -> None:
    sampler = DDPMSampler()
    with pytest.raises(SamplingError, match="set_steps"):
        sampler.step(torch.zeros(2, 3), 0, torch.zeros(2, 3))
    sampler.set_steps(10)
    with pytest.raises(SamplingError, match="shape"):
        sampler.step(torch.zeros(2, 4), 0, torch.zeros(2, 3))
    with pytest.raises(SamplingError, match="step_index"):
        sampler.step(torch.zeros(2, 3), 10, torch.zeros(2, 3))
    with pytest.raises(SamplingError, match="twice"):
        learned = DDPMSampler(variance_type="learned_range")
        learned.set_steps(10)
        learned.step(torch.zeros(2, 3), 0, torch.zeros(2, 3))
    with pytest.raises(SamplingError, match="beta schedule"):
        DDPMSampler(beta_schedule="sigmoid")  # type: ignore[arg-type]
