"""Decoder-only autoregressive language model: the AR baseline for unconditional text (and the judge of
generative perplexity for diffusion samples).

A causal `genloom.core.nn.Transformer`; training is next-token cross-entropy, sampling is the core AR loop
(`genloom.core.sampling.generate`) on its KV cache.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genloom.core.errors import check_field_names
from genloom.core.sampling.autoregressive import DecodeStats, generate
from genloom.core.sampling.logits import SamplingParams
from genloom.text.backbone import lm_backbone
from genloom.text.errors import TextInputError


@dataclass
class CausalLMConfig:
    """Architecture of a decoder-only LM (JSON round-trip with to_dict / from_dict)."""

    vocab_size: int = 1000
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    max_seq_len: int = 128
    dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CausalLMConfig:
        check_field_names(cls, data, error=TextInputError)
        return cls(**data)


class CausalLM(nn.Module):
    """Next-token predictor over token windows."""

    def __init__(self, config: CausalLMConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = lm_backbone(config, mask="causal")

    def _check(self, tokens: Tensor) -> None:
        if tokens.dim() != 2 or not 2 <= tokens.shape[1] <= self.config.max_seq_len:
            raise TextInputError(
                f"expected tokens [B, 2..{self.config.max_seq_len}], got {tuple(tokens.shape)}"
            )
        if tokens.min() < 0 or tokens.max() >= self.config.vocab_size:
            raise TextInputError(f"token ids must lie in [0, {self.config.vocab_size})")

    def loss(self, tokens: Tensor, *, glance_ratio: float = 0.0) -> Tensor:
        """Mean next-token cross-entropy (nats per predicted token)."""
        self._check(tokens)
        logits = self.backbone(tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))

    @torch.no_grad()
    def nll(self, tokens: Tensor, *, batch_size: int = 64) -> float:
        """Mean NLL (nats) of every token after the first, accumulated in float64."""
        self._check(tokens)
        total, count = 0.0, 0
        for start in range(0, tokens.shape[0], batch_size):
            chunk = tokens[start : start + batch_size]
            log_probs = self.backbone(chunk[:, :-1]).double().log_softmax(-1)
            total -= log_probs.gather(-1, chunk[:, 1:].unsqueeze(-1)).sum().item()
            count += chunk[:, 1:].numel()
        return total / count

    def perplexity(self, tokens: Tensor) -> float:
        """exp(mean NLL): for samples of another model, their generative perplexity under this one."""
        return math.exp(self.nll(tokens))

    @torch.no_grad()
    def sample(
        self,
        prompt: Tensor,
        max_new_tokens: int,
        *,
        params: SamplingParams | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, int]:
        """(prompt + new tokens [B, P + N], forward passes) with the core KV-cached AR loop."""
        if prompt.shape[1] + max_new_tokens > self.config.max_seq_len:
            raise TextInputError(
                f"prompt ({prompt.shape[1]}) + new tokens ({max_new_tokens}) exceed max_seq_len {self.config.max_seq_len}"
            )
        stats = DecodeStats()
        try:
            new = generate(
                self.backbone, prompt, max_new_tokens, params=params, generator=generator, stats=stats
            )
        finally:
            self.backbone.remove_cache()
        return torch.cat([prompt, new], dim=1), stats.forward_passes


def unigram_entropy(tokens: Tensor) -> float:
    """Entropy (nats, float64) of the token frequencies in `tokens`: low values flag repetitive samples."""
    counts = torch.bincount(tokens.reshape(-1)).double()
    probs = counts[counts > 0] / counts.sum()
    return float(-(probs * probs.log()).sum())
