"""Absorbing-state (masked) discrete diffusion, MDLM-style (Sahoo et al. 2024), and LLaDA block decoding.

Forward process: each token is independently replaced by the mask token with probability 1 - alpha(t),
t in [0, 1]. With the log-linear schedule alpha(t) = 1 - (1 - eps) t the continuous-time negative ELBO is
``E_t [ -alpha'(t) / (1 - alpha(t)) * sum_{masked i} -log p(x0_i | x_t) ]`` (weight 1/t).

Ancestral sampling from t to s < t keeps unmasked tokens (carry-over) and reveals each masked token with
probability (alpha_s - alpha_t) / (1 - alpha_t), drawing its value from the model. That reveal decision
does not depend on the model, so `MaskedDiffusionSampler.sample` draws every position's reveal step up
front and calls the model only at steps where some token changes: between them the input, hence the
logits, would be the same (MDLM's cache). With many more steps than tokens this saves most calls.
`block_decode` is LLaDA's semi-autoregressive decoder with low-confidence (or random) remasking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .errors import SamplingError
from .logits import SamplingParams, sample_from_logits

__all__ = [
    "LogLinearNoise",
    "sample_times",
    "forward_mask",
    "masked_diffusion_loss",
    "MaskedDiffusionOutput",
    "MaskedDiffusionSampler",
    "block_decode",
]


@dataclass
class LogLinearNoise:
    """alpha(t) = 1 - (1 - eps) t: the probability that a token is still clean at time t."""

    eps: float = 1e-3

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps < 1.0:
            raise SamplingError(f"LogLinearNoise.eps must be in [0, 1), got {self.eps}")

    def alpha(self, t: Tensor | float) -> Tensor | float:
        return 1.0 - (1.0 - self.eps) * t

    def loss_weight(self, t: Tensor) -> Tensor:
        """-alpha'(t) / (1 - alpha(t)), the ELBO weight of the masked cross-entropy (= 1 / t here)."""
        return (1.0 - self.eps) / (1.0 - self.alpha(t))


def sample_times(
    batch_size: int,
    *,
    eps: float = 1e-3,
    antithetic: bool = True,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training times in [eps, 1]; `antithetic` spreads the batch evenly (MDLM's low-discrepancy sampler)."""
    u = torch.rand(batch_size, device=device, generator=generator)
    if antithetic:
        u = (u / batch_size + torch.arange(batch_size, device=device) / batch_size) % 1.0
    return eps + (1.0 - eps) * u


def forward_mask(
    x0: Tensor,
    t: Tensor,
    *,
    mask_token_id: int,
    noise: LogLinearNoise | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample x_t from q(x_t | x_0): each token of `x0` [B, ...] masked with probability 1 - alpha(t[b])."""
    noise = LogLinearNoise() if noise is None else noise
    if t.shape != (x0.shape[0],):
        raise SamplingError(f"t must have shape [B={x0.shape[0]}], got {tuple(t.shape)}")
    move = (1.0 - noise.alpha(t)).reshape(-1, *([1] * (x0.dim() - 1)))
    u = torch.rand(x0.shape, device=x0.device, generator=generator)
    return torch.where(u < move, torch.full_like(x0, mask_token_id), x0)


def masked_diffusion_loss(
    logits: Tensor,
    x0: Tensor,
    xt: Tensor,
    t: Tensor,
    *,
    mask_token_id: int,
    noise: LogLinearNoise | None = None,
    reduction: Literal["none", "mean"] = "mean",
) -> Tensor:
    """Continuous-time negative ELBO (nats per sequence): weighted cross-entropy over masked positions.

    logits [B, ..., V] predict x0 [B, ...] from xt; unmasked positions cost nothing (carry-over).
    `reduction="none"` returns [B].
    """
    noise = LogLinearNoise() if noise is None else noise
    if logits.shape[:-1] != x0.shape or xt.shape != x0.shape:
        raise SamplingError(
            f"expected logits [B, ..., V] over x0/xt [B, ...]; got logits {tuple(logits.shape)}, "
            f"x0 {tuple(x0.shape)}, xt {tuple(xt.shape)}"
        )
    if t.shape != (x0.shape[0],):
        raise SamplingError(f"t must have shape [B={x0.shape[0]}], got {tuple(t.shape)}")
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    nll = -log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    nll = torch.where(xt == mask_token_id, nll, torch.zeros_like(nll))
    per_sequence = nll.reshape(x0.shape[0], -1).sum(-1) * noise.loss_weight(t.float())
    return per_sequence if reduction == "none" else per_sequence.mean()


@dataclass
class MaskedDiffusionOutput:
    tokens: Tensor
    num_model_calls: int


class MaskedDiffusionSampler:
    """Ancestral sampler for absorbing-state diffusion on the uniform time grid t_k = 1 - k / n.

    `set_steps(n)`, then either `step(logits, tokens, step_index)` n times (one model call per step), or
    `sample(forward_fn, tokens)`, which skips the model when no token would change.
    """

    def __init__(self, *, mask_token_id: int, noise: LogLinearNoise | None = None) -> None:
        self.mask_token_id = int(mask_token_id)
        self.noise = LogLinearNoise(eps=0.0) if noise is None else noise
        self.num_steps: int | None = None
        self.alphas: Tensor | None = None

    def set_steps(self, num_steps: int) -> None:
        if not isinstance(num_steps, int) or num_steps < 1:
            raise SamplingError(f"num_steps must be an int >= 1, got {num_steps!r}")
        self.num_steps = num_steps
        times = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
        self.alphas = self.noise.alpha(times)  # increasing, alphas[-1] == 1

    def _require_steps(self) -> tuple[int, Tensor]:
        if self.num_steps is None or self.alphas is None:
            raise SamplingError("call set_steps(n) before stepping the MaskedDiffusionSampler")
        return self.num_steps, self.alphas

    def reveal_probability(self, step_index: int) -> float:
        """Probability that a token masked at t_k is revealed at step k (moving to t_{k+1})."""
        _, alphas = self._require_steps()
        a_t, a_s = float(alphas[step_index]), float(alphas[step_index + 1])
        return (a_s - a_t) / (1.0 - a_t)

    def _sample_x0(self, logits: Tensor, params: SamplingParams | None, generator) -> Tensor:
        if self.mask_token_id < logits.shape[-1]:
            logits = logits.clone()
            logits[..., self.mask_token_id] = float("-inf")
        return sample_from_logits(logits, params, generator)

    def step(
        self,
        logits: Tensor,
        tokens: Tensor,
        step_index: int,
        *,
        params: SamplingParams | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw x_s ~ p(x_s | x_t) for the step from t_k to t_{k+1}; unmasked tokens carry over."""
        n, _ = self._require_steps()
        if not 0 <= step_index < n:
            raise SamplingError(f"step_index must be in [0, {n}), got {step_index}")
        if logits.shape[:-1] != tokens.shape:
            raise SamplingError(
                f"logits must have shape tokens.shape + (V,) = {tuple(tokens.shape)} + (V,), got {tuple(logits.shape)}"
            )
        x0 = self._sample_x0(logits, params, generator)
        u = torch.rand(tokens.shape, device=tokens.device, generator=generator)
        reveal = (tokens == self.mask_token_id) & (u < self.reveal_probability(step_index))
        return torch.where(reveal, x0, tokens)

    def sample(
        self,
        forward_fn: Callable[[Tensor], Tensor],
        tokens: Tensor,
        *,
        params: SamplingParams | None = None,
        generator: torch.Generator | None = None,
    ) -> MaskedDiffusionOutput:
        """Fill every masked position of `tokens` with `forward_fn(tokens) -> logits`, skipping the model
        at steps where nothing is revealed. One host sync in all (to list the steps that need the model)."""
        n, alphas = self._require_steps()
        alphas = alphas.to(tokens.device)
        masked = tokens == self.mask_token_id
        # P(revealed at step k) = (alpha_{k+1} - alpha_k) / (1 - alpha_0): invert the CDF of a uniform.
        u = torch.rand(tokens.shape, device=tokens.device, generator=generator, dtype=torch.float64)
        level = alphas[0] + (1.0 - alphas[0]) * (1.0 - u)  # in (alpha_0, 1]
        reveal_step = (torch.searchsorted(alphas, level.reshape(-1)).reshape(tokens.shape) - 1).clamp(
            0, n - 1
        )
        reveal_step = torch.where(masked, reveal_step, torch.full_like(reveal_step, -1))
        active_steps = torch.unique(reveal_step[masked]).tolist()
        for k in active_steps:
            x0 = self._sample_x0(forward_fn(tokens), params, generator)
            tokens = torch.where(reveal_step == k, x0, tokens)
        return MaskedDiffusionOutput(tokens=tokens, num_model_calls=len(active_steps))


def _transfer_counts(num_masked: Tensor, steps: int) -> Tensor:
    """Split each row's masked count evenly over `steps` (earlier steps take the remainder): [B, steps]."""
    base = num_masked // steps
    remainder = num_masked % steps
    extra = torch.arange(steps, device=num_masked.device).unsqueeze(0) < remainder.unsqueeze(1)
    return base.unsqueeze(1) + extra.long()


def block_decode(
    forward_fn: Callable[[Tensor], Tensor],
    tokens: Tensor,
    *,
    mask_token_id: int,
    num_steps: int,
    block_length: int,
    prompt_length: int = 0,
    params: SamplingParams | None = None,
    remasking: Literal["low_confidence", "random"] = "low_confidence",
    generator: torch.Generator | None = None,
) -> Tensor:
    """LLaDA's semi-autoregressive decoding (Nie et al. 2025) of `tokens` [B, L].

    The region after `prompt_length` is cut into blocks of `block_length`, decoded left to right with
    `num_steps / num_blocks` steps each; every step commits an equal share of the block's masked positions,
    the most confident predictions first (`low_confidence` remasking) or at random.
    """
    if tokens.dim() != 2:
        raise SamplingError(f"block_decode expects tokens [B, L], got {tuple(tokens.shape)}")
    if remasking not in ("low_confidence", "random"):
        raise SamplingError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    gen_length = tokens.shape[1] - prompt_length
    if block_length < 1 or gen_length % block_length:
        raise SamplingError(
            f"the generated length {gen_length} (L - prompt_length) must be a multiple of block_length={block_length}"
        )
    num_blocks = gen_length // block_length
    if num_steps < num_blocks or num_steps % num_blocks:
        raise SamplingError(
            f"num_steps={num_steps} must be a positive multiple of the number of blocks ({num_blocks})"
        )
    steps_per_block = num_steps // num_blocks
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    for block in range(num_blocks):
        start = prompt_length + block * block_length
        end = start + block_length
        in_block = (positions >= start) & (positions < end)
        counts = _transfer_counts(((tokens == mask_token_id) & in_block).sum(-1), steps_per_block)
        for i in range(steps_per_block):
            logits = forward_fn(tokens)
            if mask_token_id < logits.shape[-1]:
                logits = logits.clone()
                logits[..., mask_token_id] = float("-inf")
            x0 = sample_from_logits(logits, params, generator)
            if remasking == "low_confidence":
                probs = torch.softmax(logits.float(), dim=-1)
                confidence = probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
            else:
                confidence = torch.rand(tokens.shape, device=tokens.device, generator=generator)
            candidate = (tokens == mask_token_id) & (positions < end)
            confidence = confidence.masked_fill(~candidate, float("-inf"))
            ranks = torch.empty_like(tokens).scatter_(
                -1,
                torch.argsort(confidence, dim=-1, descending=True, stable=True),
                positions.expand_as(tokens),
            )
            transfer = (ranks < counts[:, i : i + 1]) & candidate
            tokens = torch.where(transfer, x0, tokens)
    return tokens
