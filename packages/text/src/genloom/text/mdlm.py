"""Masked diffusion language model (MDLM, Sahoo et al. 2024) on the shared transformer and sampler.

Absorbing-state forward process with the log-linear schedule, the continuous-time ELBO loss and the
"SUBS" parameterisation (the model never predicts the mask token; unmasked tokens are carried over),
all from `genloom.core.sampling.discrete_diffusion`. Sampling goes through the core
`MaskedDiffusionSampler` (which skips the forward pass on steps where nothing unmasks) or LLaDA-style
`block_decode`. No time conditioning: under the log-linear schedule MDLM works without it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from genloom.core.errors import check_field_names
from genloom.core.nn.cuda_graphs import GraphCache
from genloom.core.sampling.discrete_diffusion import (
    LogLinearNoise,
    MaskedDiffusionOutput,
    MaskedDiffusionSampler,
    block_decode,
    forward_mask,
    masked_diffusion_loss,
    sample_times,
)
from genloom.core.sampling.logits import SamplingParams
from genloom.text.backbone import lm_backbone
from genloom.text.errors import TextInputError


@dataclass
class MDLMConfig:
    """Architecture of a masked diffusion LM; `mask_id` must lie inside the vocabulary."""

    vocab_size: int = 1000
    mask_id: int = 3
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    max_seq_len: int = 128
    dropout: float = 0.0
    noise_eps: float = 1e-3

    def __post_init__(self) -> None:
        if not 0 <= self.mask_id < self.vocab_size:
            raise TextInputError(f"mask_id {self.mask_id} must lie in [0, vocab_size={self.vocab_size})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MDLMConfig:
        check_field_names(cls, data, error=TextInputError)
        return cls(**data)


class AbsorbingDiffusionLM(nn.Module):
    """What the absorbing-state diffusion LMs share (MDLM, SEDD): a bidirectional backbone, the log-linear
    noise, input checks, the training loss and the stratified ELBO. A family defines `_nelbo`."""

    def __init__(self, config: MDLMConfig) -> None:
        super().__init__()
        self.config = config
        self.noise = LogLinearNoise(eps=config.noise_eps)
        self.backbone = lm_backbone(config, mask="bidirectional")

    def _nelbo(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-sequence negative ELBO estimate [B] (nats) at diffusion times t [B]."""
        raise NotImplementedError

    def _check(self, x0: Tensor) -> None:
        if x0.dim() != 2 or x0.shape[1] > self.config.max_seq_len or x0.shape[1] == 0:
            raise TextInputError(f"expected tokens [B, 1..{self.config.max_seq_len}], got {tuple(x0.shape)}")
        if x0.min() < 0 or x0.max() >= self.config.vocab_size or (x0 == self.config.mask_id).any():
            raise TextInputError(
                f"tokens must lie in [0, {self.config.vocab_size}) and never be the mask id {self.config.mask_id}"
            )

    def _check_length(self, length: int) -> None:
        if not 1 <= length <= self.config.max_seq_len:
            raise TextInputError(f"length must lie in [1, {self.config.max_seq_len}], got {length}")

    def loss(self, x0: Tensor, *, glance_ratio: float = 0.0) -> Tensor:
        """Negative ELBO in nats per token (one antithetic time per sequence)."""
        self._check(x0)
        t = sample_times(x0.shape[0], eps=self.config.noise_eps, device=x0.device)
        return self._nelbo(x0, t).mean() / x0.shape[1]

    @torch.no_grad()
    def elbo_nll(self, x0: Tensor, *, num_times: int = 32, generator: torch.Generator | None = None) -> float:
        """Negative ELBO in nats per token, averaged over `num_times` stratified times per sequence."""
        self._check(x0)
        eps, total = self.config.noise_eps, 0.0
        for k in range(num_times):
            u = (k + torch.rand(x0.shape[0], generator=generator)) / num_times
            t = (eps + (1 - eps) * u).to(x0.device)
            total += self._nelbo(x0, t, generator).double().mean().item()
        return total / num_times / x0.shape[1]

    def elbo_perplexity(
        self, x0: Tensor, *, num_times: int = 32, generator: torch.Generator | None = None
    ) -> float:
        """exp(negative ELBO per token): an upper bound on the model's true perplexity."""
        return math.exp(self.elbo_nll(x0, num_times=num_times, generator=generator))


class MaskedDiffusionLM(AbsorbingDiffusionLM):
    """Bidirectional transformer denoiser x_t -> p(x_0 | x_t)."""

    def __init__(self, config: MDLMConfig) -> None:
        super().__init__(config)
        self._graphs = GraphCache(self.logits, watch=self)  # the GPU fast path: denoiser passes per shape

    def logits(self, tokens: Tensor) -> Tensor:
        """SUBS parameterisation: float32 logits [B, L, V] with the mask token excluded."""
        logits = self.backbone(tokens)
        logits[..., self.config.mask_id] = float("-inf")
        return logits

    def _nelbo(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        xt = forward_mask(x0, t, mask_token_id=self.config.mask_id, noise=self.noise, generator=generator)
        return masked_diffusion_loss(
            self.logits(xt), x0, xt, t, mask_token_id=self.config.mask_id, noise=self.noise, reduction="none"
        )

    @torch.no_grad()
    def sample(
        self,
        batch_size: int,
        length: int,
        *,
        steps: int = 64,
        params: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
        float64: bool = False,
        graphed: bool = False,
    ) -> MaskedDiffusionOutput:
        """Ancestral sampling from all-mask; `num_model_calls` <= steps (skipped steps cost nothing).

        `float64` samples from float64 probabilities (float32 Gumbel / multinomial sampling truncates the
        tail and lowers the entropy of samples: Zheng et al. 2024). `graphed=True` (the GPU fast path)
        replays the fixed-shape denoiser pass from a CUDA graph captured once per batch size and length;
        the sampler between passes is unchanged, so the tokens are the eager ones."""
        self._check_length(length)
        sampler = MaskedDiffusionSampler(mask_token_id=self.config.mask_id, noise=self.noise)
        sampler.set_steps(steps)
        tokens = torch.full((batch_size, length), self.config.mask_id, dtype=torch.long, device=device)
        if graphed:
            self._graphs.refresh()
        denoise = (lambda x: self._graphs(None, x)) if graphed else self.logits
        forward = (lambda x: denoise(x).double()) if float64 else denoise
        return sampler.sample(forward, tokens, params=params, generator=generator)

    @torch.no_grad()
    def block_sample(
        self,
        prompt: Tensor,
        length: int,
        *,
        steps: int = 64,
        block_length: int = 16,
        remasking: str = "low_confidence",
    ) -> Tensor:
        """LLaDA semi-autoregressive decoding after `prompt` [B, P] (confidence remasking)."""
        tokens = torch.cat(
            [
                prompt,
                torch.full(
                    (prompt.shape[0], length), self.config.mask_id, dtype=torch.long, device=prompt.device
                ),
            ],
            dim=1,
        )
        return block_decode(
            self.logits,
            tokens,
            mask_token_id=self.config.mask_id,
            num_steps=steps,
            block_length=block_length,
            prompt_length=prompt.shape[1],
            remasking=remasking,
        )
