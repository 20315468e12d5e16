"""Score-entropy discrete diffusion (SEDD, Lou et al. 2024) with the absorbing graph, on the MDLM backbone.

The network estimates concrete scores s(x_t)_i[y] = p_t(x_t with position i set to y) / p_t(x_t) for every
masked position i and every real token y (an absorbing chain only moves mask -> token in reverse). Output
scaling follows the paper's absorbing recipe: log s = out - log(e^{sigma_bar} - 1) - log(V' - 1), with V' the
number of non-absorbing tokens, so an untrained model starts at the uniform ratio. With the log-linear schedule the
true score of an absorbing chain is r(t) p(x0_i = y | x_t), whose x_t-dependent part does not depend on t,
so, as for MDLM, the backbone takes no time input.

Loss: the diffusion-weighted denoising score entropy, sigma(t) sum_i [x_t^i masked] SE_i, with
SE = sum_y s_y - r log s_{x0} + r (log r - 1) and r = 1 / (e^{sigma_bar} - 1); its expectation over t is
the negative ELBO (the prior term, O(eps), is dropped as in MDLM). Sampling: the analytic ("Tweedie")
tau-leaping step, or the Euler step, on a uniform time grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from genloom.core.sampling.discrete_diffusion import LogLinearNoise, forward_mask
from genloom.text.errors import TextInputError
from genloom.text.mdlm import AbsorbingDiffusionLM, MDLMConfig

__all__ = ["SEDDConfig", "SEDDOutput", "ScoreEntropyLM", "score_entropy", "tau_leaping_sample"]

STRATEGIES = ("analytic", "euler")


@dataclass
class SEDDConfig(MDLMConfig):
    """Same sizes as an MDLM; `mask_id` is the absorbing state."""


@dataclass
class SEDDOutput:
    tokens: Tensor
    num_model_calls: int


def total_noise(noise: LogLinearNoise, t: Tensor) -> tuple[Tensor, Tensor]:
    """(sigma_bar(t), sigma(t)) of the log-linear schedule: exp(-sigma_bar) = alpha(t) = 1 - (1 - eps) t."""
    alpha = noise.alpha(t)
    return -torch.log(alpha), (1.0 - noise.eps) / alpha


def score_entropy(log_score: Tensor, x0: Tensor, xt: Tensor, sigma_bar: Tensor, *, mask_id: int) -> Tensor:
    """Denoising score entropy per position [B, L] (zero where x_t is not masked).

    log_score [B, L, V] must hold -inf at the mask id; sigma_bar [B]."""
    ratio = 1.0 / torch.expm1(sigma_bar.double()).float()  # r = p(x0 | mask) / p(mask | x0) ratio [B]
    ratio = ratio.unsqueeze(1).expand_as(x0)
    positive = log_score.exp().sum(-1)
    negative = ratio * log_score.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    constant = ratio * (ratio.log() - 1.0)
    entropy = positive - negative + constant
    return torch.where(xt == mask_id, entropy, torch.zeros_like(entropy))


class ScoreEntropyLM(AbsorbingDiffusionLM):
    """Bidirectional transformer x_t -> log concrete scores, trained with score entropy."""

    def log_score(self, tokens: Tensor, sigma_bar: Tensor) -> Tensor:
        """float32 log scores [B, L, V]; -inf at the mask id (never a reverse target)."""
        out = self.backbone(tokens).float()
        scale = torch.log(torch.expm1(sigma_bar.double())).float() + math.log(self.config.vocab_size - 1)
        out = out - scale.view(-1, 1, 1)
        out[..., self.config.mask_id] = float("-inf")
        return out

    def _nelbo(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        xt = forward_mask(x0, t, mask_token_id=self.config.mask_id, noise=self.noise, generator=generator)
        sigma_bar, sigma = total_noise(self.noise, t)
        entropy = score_entropy(self.log_score(xt, sigma_bar), x0, xt, sigma_bar, mask_id=self.config.mask_id)
        return sigma * entropy.sum(-1)

    @torch.no_grad()
    def sample(
        self,
        batch_size: int,
        length: int,
        *,
        steps: int = 64,
        strategy: str = "analytic",
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> SEDDOutput:
        """Tau-leaping from all-mask (`tau_leaping_sample`); one model call per step."""
        self._check_length(length)
        return tau_leaping_sample(
            self.log_score, self.noise, self.config.mask_id, batch_size, length,
            steps=steps, strategy=strategy, generator=generator, device=device,
        )  # fmt: skip


def _step_weights(
    score: Tensor, noise: LogLinearNoise, mask_id: int, t: float, s: float, strategy: str
) -> Tensor:
    """Unnormalised probabilities [B, L, V] of x_s given x_t at masked positions (mask id = stay)."""
    alpha_t, alpha_s = float(noise.alpha(t)), float(noise.alpha(s))
    if strategy == "analytic":  # exact reverse step of the absorbing chain with the score plugged in
        weights = score * (alpha_s - alpha_t) / alpha_t
        stay = torch.full_like(weights[..., 0], (1.0 - alpha_s) / (1.0 - alpha_t))
    else:  # Euler: jump rate sigma(t) s_y over the step dt
        weights = score * (1.0 - noise.eps) / alpha_t * (t - s)
        stay = (1.0 - weights.sum(-1)).clamp(min=0.0)
    weights[..., mask_id] = stay
    return weights


@torch.no_grad()
def tau_leaping_sample(
    log_score_fn: Callable[[Tensor, Tensor], Tensor],
    noise: LogLinearNoise,
    mask_id: int,
    batch_size: int,
    length: int,
    *,
    steps: int = 64,
    strategy: str = "analytic",
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> SEDDOutput:
    """Absorbing-graph sampling on t_k = 1 - k / steps with `log_score_fn(tokens, sigma_bar) -> [B, L, V]`
    log concrete scores: the analytic (Tweedie) or Euler tau-leaping step in float64; the last step reveals
    every remaining mask from the normalised scores (the mask column is never a target)."""
    if strategy not in STRATEGIES:
        raise TextInputError(f"unknown SEDD sampling strategy {strategy!r}; use {' or '.join(STRATEGIES)}")
    if steps < 1:
        raise TextInputError(f"steps must be >= 1, got {steps}")
    tokens = torch.full((batch_size, length), mask_id, dtype=torch.long, device=device)
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    times[0] = 1.0 - 1e-5  # sigma_bar(1) is finite for eps > 0; stay clear of it when eps == 0
    for k in range(steps):
        t, s = times[k], times[k + 1]
        sigma_bar = -torch.log(torch.full((batch_size,), float(noise.alpha(t)), device=device))
        score = log_score_fn(tokens, sigma_bar).double().exp()
        score[..., mask_id] = 0.0
        weights = score if k == steps - 1 else _step_weights(score, noise, mask_id, t, s, strategy)
        flat = weights.reshape(-1, weights.shape[-1])
        drawn = torch.multinomial(flat / flat.sum(-1, keepdim=True), 1, generator=generator)
        tokens = torch.where(tokens == mask_id, drawn.view(tokens.shape), tokens)
    return SEDDOutput(tokens=tokens, num_model_calls=steps)
