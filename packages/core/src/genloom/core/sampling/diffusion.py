"""Gaussian diffusion for continuous tokens: DDPM ancestral and DDIM steps on respaced timesteps.

The arrays follow the improved-DDPM / guided-diffusion conventions that MAR's diffusion head uses
(float64 schedules, `cosine` betas from alpha_bar(t) = cos^2((t + 0.008) / 1.008 * pi / 2) capped at
0.999, respacing that re-derives betas from alphas_cumprod at the kept timesteps, learned-range variance),
so a model trained with 1000 steps can be sampled with e.g. 100 (`set_steps(100)`) and match MAR exactly.

Usage: ``sampler.set_steps(n)``, then for ``i, t in enumerate(sampler.timesteps)`` (original timesteps,
noisiest first) call the model at ``t`` and ``x = sampler.step(output, i, x).prev_sample``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .errors import SamplingError

__all__ = [
    "beta_schedule",
    "space_timesteps",
    "DiffusionStepOutput",
    "GaussianDiffusion",
    "DDPMSampler",
    "DDIMSampler",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
]

BetaSchedule = Literal["linear", "cosine"]
PredictionType = Literal["epsilon", "v", "x0"]
VarianceType = Literal["fixed_small", "fixed_large", "learned_range"]


def beta_schedule(kind: BetaSchedule, num_train_steps: int) -> Tensor:
    """float64 betas [T]: `linear` (DDPM, scaled to T as in improved DDPM) or `cosine` (Nichol & Dhariwal)."""
    if num_train_steps < 1:
        raise SamplingError(f"num_train_steps must be >= 1, got {num_train_steps}")
    if kind == "linear":
        scale = 1000 / num_train_steps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_train_steps, dtype=torch.float64)
    if kind == "cosine":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(1 - alpha_bar((i + 1) / num_train_steps) / alpha_bar(i / num_train_steps), 0.999)
            for i in range(num_train_steps)
        ]
        return torch.tensor(betas, dtype=torch.float64)
    raise SamplingError(f"unknown beta schedule {kind!r}; expected 'linear' or 'cosine'")


def space_timesteps(num_train_steps: int, section_counts: int | str | Sequence[int]) -> list[int]:
    """The training timesteps kept for sampling, sorted ascending.

    `section_counts`: an int or "N" (N steps evenly spaced, ends included), "a,b,c" (the range cut into
    equal sections with a, b, c steps each) or "ddimN" (a constant integer stride giving N steps).
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim") :])
            for stride in range(1, num_train_steps):
                if len(range(0, num_train_steps, stride)) == desired:
                    return list(range(0, num_train_steps, stride))
            raise SamplingError(f"no integer stride gives exactly {desired} of {num_train_steps} steps")
        counts = [int(part) for part in section_counts.split(",")]
    elif isinstance(section_counts, int):
        counts = [section_counts]
    else:
        counts = [int(c) for c in section_counts]
    size_per, extra = divmod(num_train_steps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise SamplingError(f"cannot take {count} steps from a section of {size} timesteps")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(j * stride) for j in range(count)]  # Python's round, as the reference
        start += size
    return sorted(set(kept))


@dataclass
class DiffusionStepOutput:
    prev_sample: Tensor
    pred_x0: Tensor
    mean: Tensor | None = None
    log_variance: Tensor | None = None


class GaussianDiffusion:
    """Schedule arrays (train and respaced) and the conversions shared by the DDPM and DDIM samplers."""

    def __init__(
        self,
        *,
        num_train_steps: int = 1000,
        beta_schedule: BetaSchedule = "linear",
        prediction_type: PredictionType = "epsilon",
        variance_type: VarianceType = "fixed_small",
        clip_sample: float | None = None,
    ) -> None:
        if prediction_type not in ("epsilon", "v", "x0"):
            raise SamplingError(f"prediction_type must be 'epsilon', 'v' or 'x0', got {prediction_type!r}")
        if variance_type not in ("fixed_small", "fixed_large", "learned_range"):
            raise SamplingError(
                f"variance_type must be 'fixed_small', 'fixed_large' or 'learned_range', got {variance_type!r}"
            )
        self.num_train_steps = num_train_steps
        self.prediction_type = prediction_type
        self.variance_type = variance_type
        self.clip_sample = clip_sample
        self.train_betas = _beta_schedule_fn(beta_schedule, num_train_steps)
        self.train_alphas_cumprod = torch.cumprod(1.0 - self.train_betas, dim=0)
        self.train_arrays = _derived_arrays(self.train_betas)
        self.num_steps: int | None = None
        self.timestep_map: Tensor | None = None
        self.timesteps: Tensor | None = None
        self.arrays: dict[str, Tensor] = {}

    # ---- schedule -------------------------------------------------------------------------------------
    def set_steps(self, num_steps: int | str | Sequence[int]) -> None:
        """Respace to the timesteps `space_timesteps(T, num_steps)` keeps; `timesteps` lists them noisiest first."""
        kept = space_timesteps(self.num_train_steps, num_steps)
        acp_kept = self.train_alphas_cumprod[kept]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), acp_kept[:-1]])
        betas = 1.0 - acp_kept / prev
        self.num_steps = len(kept)
        self.timestep_map = torch.tensor(kept, dtype=torch.long)
        self.timesteps = self.timestep_map.flip(0)
        self.arrays = _derived_arrays(betas)

    def _require_steps(self) -> int:
        if self.num_steps is None:
            raise SamplingError(f"call set_steps(n) before stepping the {type(self).__name__}")
        return self.num_steps

    def _coef(
        self, name: str, index: int | Tensor, like: Tensor, arrays: dict[str, Tensor] | None = None
    ) -> float | Tensor:
        """arrays[name] at `index` (an int, or a LongTensor [B] broadcast over `like`'s rows); the
        respaced arrays unless `arrays` is given."""
        array = (self.arrays if arrays is None else arrays)[name]
        if isinstance(index, Tensor):
            values = array.to(like.device)[index.to(like.device)].to(like.dtype)
            return values.reshape(-1, *([1] * (like.dim() - 1)))
        return float(array[index])

    def _respaced_index(self, step_index: int | Tensor) -> int | Tensor:
        n = self._require_steps()
        if isinstance(step_index, Tensor):
            return n - 1 - step_index.long()
        if not 0 <= step_index < n:
            raise SamplingError(f"step_index must be in [0, {n}), got {step_index}")
        return n - 1 - step_index

    # ---- training -------------------------------------------------------------------------------------
    def _train_coef(self, values: Tensor, timesteps: Tensor, like: Tensor) -> Tensor:
        out = values.to(like.device)[timesteps.to(like.device)].to(like.dtype)
        return out.reshape(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """q(x_t | x_0) at training timesteps [B]: sqrt(a_t) x0 + sqrt(1 - a_t) noise."""
        acp = self._train_coef(self.train_alphas_cumprod, timesteps, x0)
        return acp.sqrt() * x0 + (1 - acp).sqrt() * noise

    def training_target(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """What the network regresses for this `prediction_type` (eps, v = sqrt(a) eps - sqrt(1-a) x0, or x0)."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "x0":
            return x0
        acp = self._train_coef(self.train_alphas_cumprod, timesteps, x0)
        return acp.sqrt() * noise - (1 - acp).sqrt() * x0

    # ---- sampling -------------------------------------------------------------------------------------
    def _split_output(self, model_output: Tensor, sample: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.variance_type == "learned_range":
            if model_output.shape[1] != 2 * sample.shape[1]:
                raise SamplingError(
                    "learned_range variance needs model_output with twice the sample's channels on dim 1 "
                    f"(prediction, variance values): sample {tuple(sample.shape)}, output {tuple(model_output.shape)}"
                )
            prediction, var_values = model_output.chunk(2, dim=1)
            return prediction, var_values
        if model_output.shape != sample.shape:
            raise SamplingError(
                f"model_output must have the sample's shape {tuple(sample.shape)}, got {tuple(model_output.shape)}"
            )
        return model_output, None

    def predict_x0_and_eps(
        self, prediction: Tensor, k: int | Tensor, sample: Tensor, arrays: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Convert the network prediction at respaced index k into (x0, eps)."""
        acp = self._coef("alphas_cumprod", k, sample, arrays)
        sqrt_acp = acp.sqrt() if isinstance(acp, Tensor) else math.sqrt(acp)
        sqrt_1m = (1 - acp).sqrt() if isinstance(acp, Tensor) else math.sqrt(1 - acp)
        if self.prediction_type == "epsilon":
            x0 = (sample - sqrt_1m * prediction) / sqrt_acp
        elif self.prediction_type == "x0":
            x0 = prediction
        else:
            x0 = sqrt_acp * sample - sqrt_1m * prediction
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
        eps = (sample - sqrt_acp * x0) / sqrt_1m
        return x0, eps

    def p_mean_variance(
        self, model_output: Tensor, step_index: int | Tensor, sample: Tensor
    ) -> tuple[Tensor, Tensor | float, Tensor]:
        """Posterior mean, log-variance and predicted x0 of p(x_{k-1} | x_k) (guided-diffusion's p_mean_variance)."""
        k = self._respaced_index(step_index)
        prediction, var_values = self._split_output(model_output, sample)
        return self._mean_log_variance(prediction, var_values, k, sample, self.arrays)

    def _mean_log_variance(
        self,
        prediction: Tensor,
        var_values: Tensor | None,
        k: int | Tensor,
        sample: Tensor,
        arrays: dict[str, Tensor],
    ) -> tuple[Tensor, Tensor | float, Tensor]:
        x0, _ = self.predict_x0_and_eps(prediction, k, sample, arrays)
        mean = self._posterior_mean(x0, sample, k, arrays)
        if self.variance_type == "fixed_small":
            log_variance = self._coef("posterior_log_variance_clipped", k, sample, arrays)
        elif self.variance_type == "fixed_large":
            log_variance = self._coef("log_variance_large", k, sample, arrays)
        else:
            min_log = self._coef("posterior_log_variance_clipped", k, sample, arrays)
            max_log = self._coef("log_betas", k, sample, arrays)
            frac = (var_values + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
        return mean, log_variance, x0

    def _posterior_mean(
        self, x0: Tensor, sample: Tensor, k: int | Tensor, arrays: dict[str, Tensor]
    ) -> Tensor:
        """Mean of q(x_{k-1} | x_k, x0)."""
        return (
            self._coef("posterior_mean_coef1", k, sample, arrays) * x0
            + self._coef("posterior_mean_coef2", k, sample, arrays) * sample
        )

    # ---- training loss --------------------------------------------------------------------------------
    def training_losses(
        self, model_output: Tensor, x0: Tensor, noise: Tensor, timesteps: Tensor
    ) -> dict[str, Tensor]:
        """Per-sample losses [B] for a network output at training `timesteps` on x_t = add_noise(x0, noise, t).

        `mse` regresses `training_target`. With `learned_range` variance, `vb` adds the variational bound
        term in bits per dimension (improved DDPM's hybrid loss, MAR's diffusion loss): KL between the
        true posterior q(x_{t-1} | x_t, x0) and the model's Gaussian, with the mean's gradient stopped,
        and the discretised Gaussian decoder NLL at t = 0. `loss` = mse (+ vb).
        """
        if x0.dim() < 2 or noise.shape != x0.shape or timesteps.shape != (x0.shape[0],):
            raise SamplingError(
                f"expected x0 and noise [B, C, ...] (same shape) and timesteps [B]; got x0 {tuple(x0.shape)}, "
                f"noise {tuple(noise.shape)}, timesteps {tuple(timesteps.shape)}"
            )
        x_t = self.add_noise(x0, noise, timesteps)
        prediction, var_values = self._split_output(model_output, x_t)
        dims = tuple(range(1, x0.dim()))
        mse = ((self.training_target(x0, noise, timesteps) - prediction) ** 2).mean(dim=dims)
        if var_values is None:
            return {"mse": mse, "loss": mse}
        k = timesteps.to(x0.device)
        model_mean, model_log_variance, _ = self._mean_log_variance(
            prediction.detach(), var_values, k, x_t, self.train_arrays
        )
        true_mean = self._posterior_mean(x0, x_t, k, self.train_arrays)
        true_log_variance = self._coef("posterior_log_variance_clipped", k, x_t, self.train_arrays)
        kl = normal_kl(true_mean, true_log_variance, model_mean, model_log_variance).mean(
            dim=dims
        ) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x0, means=model_mean, log_scales=0.5 * model_log_variance
        ).mean(dim=dims) / math.log(2.0)
        vb = torch.where(k == 0, decoder_nll, kl)
        return {"mse": mse, "vb": vb, "loss": mse + vb}

    def _noise(self, sample: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.randn(sample.shape, device=sample.device, dtype=sample.dtype, generator=generator)

    def sample(
        self,
        model_fn: Callable[[Tensor, Tensor], Tensor],
        noise: Tensor,
        *,
        generator: torch.Generator | None = None,
        **step_kwargs,
    ) -> Tensor:
        """Run every step with `model_fn(x, timesteps[B]) -> output`, starting from `noise`."""
        self._require_steps()
        x = noise
        for i, t in enumerate(self.timesteps.tolist()):
            timesteps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            x = self.step(model_fn(x, timesteps), i, x, generator=generator, **step_kwargs).prev_sample
        return x

    def step(self, model_output: Tensor, step_index: int, sample: Tensor, **kwargs) -> DiffusionStepOutput:
        raise NotImplementedError


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _approx_standard_normal_cdf(x: Tensor) -> Tensor:
    # the tanh approximation of the Gaussian CDF used by improved DDPM (kept for bit-compatible losses)
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, *, means: Tensor, log_scales: Tensor) -> Tensor:
    """log-probability of data in [-1, 1] quantised to 256 bins under a Gaussian (edge bins open-ended)."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _beta_schedule_fn(kind: str, num_train_steps: int) -> Tensor:
    return beta_schedule(kind, num_train_steps)  # type: ignore[arg-type]


def _derived_arrays(betas: Tensor) -> dict[str, Tensor]:
    """The float64 arrays guided-diffusion derives from betas (posterior coefficients and variances)."""
    alphas = 1.0 - betas
    acp = torch.cumprod(alphas, dim=0)
    acp_prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
    posterior_variance = betas * (1.0 - acp_prev) / (1.0 - acp)
    clipped = (
        torch.cat([posterior_variance[1:2], posterior_variance[1:]]) if len(betas) > 1 else betas.clone()
    )
    large = torch.cat([posterior_variance[1:2], betas[1:]]) if len(betas) > 1 else betas.clone()
    return {
        "betas": betas,
        "log_betas": torch.log(betas),
        "alphas_cumprod": acp,
        "alphas_cumprod_prev": acp_prev,
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": torch.log(clipped),
        "log_variance_large": torch.log(large),
        "posterior_mean_coef1": betas * acp_prev.sqrt() / (1.0 - acp),
        "posterior_mean_coef2": (1.0 - acp_prev) * alphas.sqrt() / (1.0 - acp),
    }


class DDPMSampler(GaussianDiffusion):
    """Ancestral sampling (Ho et al. 2020) on the respaced schedule; `temperature` scales the noise (MAR)."""

    def step(
        self,
        model_output: Tensor,
        step_index: int | Tensor,
        sample: Tensor,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> DiffusionStepOutput:
        mean, log_variance, x0 = self.p_mean_variance(model_output, step_index, sample)
        std = (
            torch.exp(0.5 * log_variance)
            if isinstance(log_variance, Tensor)
            else math.exp(0.5 * log_variance)
        )
        k = self._respaced_index(step_index)
        noise = self._noise(sample, generator) * temperature
        if isinstance(k, Tensor):
            nonzero = (k != 0).to(sample.dtype).reshape(-1, *([1] * (sample.dim() - 1)))
            prev = mean + nonzero * std * noise
        else:
            prev = mean + std * noise if k != 0 else mean
        log_var_t = log_variance if isinstance(log_variance, Tensor) else torch.full_like(mean, log_variance)
        return DiffusionStepOutput(prev_sample=prev, pred_x0=x0, mean=mean, log_variance=log_var_t)


class DDIMSampler(GaussianDiffusion):
    """DDIM (Song et al. 2021): eta = 0 is the deterministic ODE sampler, eta = 1 matches DDPM's variance."""

    def step(
        self,
        model_output: Tensor,
        step_index: int | Tensor,
        sample: Tensor,
        *,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> DiffusionStepOutput:
        k = self._respaced_index(step_index)
        prediction, _ = self._split_output(model_output, sample)
        x0, eps = self.predict_x0_and_eps(prediction, k, sample)
        acp = self._coef("alphas_cumprod", k, sample)
        acp_prev = self._coef("alphas_cumprod_prev", k, sample)
        if isinstance(acp, Tensor):
            sigma = eta * ((1 - acp_prev) / (1 - acp) * (1 - acp / acp_prev)).sqrt()
            mean = x0 * acp_prev.sqrt() + (1 - acp_prev - sigma**2).clamp_min(0).sqrt() * eps
        else:
            sigma = eta * math.sqrt((1 - acp_prev) / (1 - acp) * (1 - acp / acp_prev))
            mean = x0 * math.sqrt(acp_prev) + math.sqrt(max(0.0, 1 - acp_prev - sigma**2)) * eps
        if eta == 0:
            return DiffusionStepOutput(prev_sample=mean, pred_x0=x0, mean=mean)
        noise = self._noise(sample, generator)
        if isinstance(k, Tensor):
            nonzero = (k != 0).to(sample.dtype).reshape(-1, *([1] * (sample.dim() - 1)))
            prev = mean + nonzero * sigma * noise
        else:
            prev = mean + sigma * noise if k != 0 else mean
        return DiffusionStepOutput(prev_sample=prev, pred_x0=x0, mean=mean)
