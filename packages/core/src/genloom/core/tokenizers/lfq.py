"""Lookup-free quantisation (LFQ, MAGVIT-v2, Yu et al. 2023, arXiv:2310.05737) and its spherical variant.

Each of the d channels is quantized to its sign, so the implicit codebook is {-s, +s}^d with 2^d codes and
a token id is the d-bit number of the signs (first channel = most significant bit). An entropy penalty
(low entropy per sample, high entropy of the batch-average code distribution) keeps the codes confident
and all in use. `BinarySphericalQuantizer` (BSQ, Zhao et al. 2024, arXiv:2406.07548) first projects the
vectors onto the unit sphere and uses codes of norm 1 (s = 1/sqrt(d)).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from genloom.core.tokenizers.base import (
    Quantizer,
    QuantizerOutput,
    check_features,
    check_indices,
    codebook_projections,
    move_channels_back,
    move_channels_last,
    perplexity_from_counts,
)

# "auto" computes the exact entropy over all 2^d codes up to this many bits, the factorised one above.
_EXACT_ENTROPY_MAX_BITS = 10


def binary_entropy(p: Tensor) -> Tensor:
    """Entropy in nats of Bernoulli(p), elementwise."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def categorical_entropy(probs: Tensor) -> Tensor:
    """Entropy in nats of the categorical distributions along the last dim."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)


class LFQ(Quantizer):
    """Sign quantizer over `codebook_dim` bits with the MAGVIT-v2 entropy penalty.

    Args:
        codebook_dim: number of bits d; codebook_size = 2**d.
        dim: channels of the input; a Linear projection to d channels (and back) is added when it
            differs. Defaults to d.
        channel_dim: 1 for [B, C, H, W], -1 for [B, T, D].
        codebook_scale: value s of a code's entries (codes are in {-s, +s}^d).
        entropy_weight: weight of (per-sample entropy - diversity_gamma * codebook entropy).
        diversity_gamma: weight of the batch (codebook) entropy inside the penalty.
        commitment_weight: weight of ||z - sg(code)||^2.
        inv_temperature: sharpness of the soft code assignment used by the entropy terms,
            p(code) ~ softmax(2 * inv_temperature * <z, code>).
        entropy_mode: "exact" sums over all 2^d codes; "factorized" treats the bits as independent
            (exact for the per-sample term, an upper bound for the codebook term, as in BSQ), which
            scales to many bits; "auto" picks exact up to 10 bits.
        spherical: L2-normalise inputs and use s = 1/sqrt(d) (binary spherical quantisation).
    """

    def __init__(
        self,
        *,
        codebook_dim: int = 10,
        dim: int | None = None,
        channel_dim: int = -1,
        codebook_scale: float = 1.0,
        entropy_weight: float = 0.1,
        diversity_gamma: float = 1.0,
        commitment_weight: float = 0.25,
        inv_temperature: float = 100.0,
        entropy_mode: Literal["auto", "exact", "factorized"] = "auto",
        spherical: bool = False,
    ) -> None:
        super().__init__()
        if not 1 <= codebook_dim <= 62:
            raise ValueError(f"LFQ codebook_dim (bits) must lie in [1, 62], got {codebook_dim}")
        if entropy_mode not in ("auto", "exact", "factorized"):
            raise ValueError(f"entropy_mode must be 'auto', 'exact' or 'factorized', got {entropy_mode!r}")
        self.codebook_dim = codebook_dim
        self.codebook_size = 2**codebook_dim
        self.dim = dim or codebook_dim
        self.channel_dim = channel_dim
        self.spherical = spherical
        self.codebook_scale = 1.0 / math.sqrt(codebook_dim) if spherical else codebook_scale
        self.entropy_weight = entropy_weight
        self.diversity_gamma = diversity_gamma
        self.commitment_weight = commitment_weight
        self.inv_temperature = inv_temperature
        if entropy_mode == "auto":
            entropy_mode = "exact" if codebook_dim <= _EXACT_ENTROPY_MAX_BITS else "factorized"
        self.entropy_mode = entropy_mode

        # Bit weights, most significant first: index = sum(bit_i * 2^(d-1-i)).
        self.register_buffer(
            "_bit_values", 2 ** torch.arange(codebook_dim - 1, -1, -1, dtype=torch.long), persistent=False
        )
        self.project_in, self.project_out = codebook_projections(self.dim, codebook_dim)

    def forward(self, z: Tensor) -> QuantizerOutput:
        name = type(self).__name__
        check_features(z, channels=self.dim, channel_dim=self.channel_dim, name=name)
        z_e = self.project_in(move_channels_last(z, self.channel_dim)).float()
        if self.spherical:
            z_e = F.normalize(z_e, dim=-1)
        positive = z_e > 0
        quantized = torch.where(positive, self.codebook_scale, -self.codebook_scale)
        indices = (positive.long() * self._bit_values).sum(dim=-1)

        commit_loss = F.mse_loss(z_e, quantized)
        per_sample_entropy, codebook_entropy = self.entropy_terms(z_e.reshape(-1, self.codebook_dim))
        entropy_loss = per_sample_entropy - self.diversity_gamma * codebook_entropy
        loss = self.entropy_weight * entropy_loss + self.commitment_weight * commit_loss

        codes = z_e + (quantized - z_e).detach()  # straight-through estimator
        out = move_channels_back(self.project_out(codes.to(z.dtype)), self.channel_dim)
        counts = (
            torch.bincount(indices.flatten(), minlength=self.codebook_size)
            if self.codebook_dim <= 20
            else None
        )
        metrics = {
            "per_sample_entropy": per_sample_entropy.detach(),
            "codebook_entropy": codebook_entropy.detach(),
            "quantization_error": commit_loss.detach(),
        }
        if counts is not None:
            metrics["perplexity"] = perplexity_from_counts(counts)
        return QuantizerOutput(out, indices, loss, metrics)

    def entropy_terms(self, z_flat: Tensor) -> tuple[Tensor, Tensor]:
        """(mean per-sample entropy, entropy of the mean distribution) of the soft code assignments."""
        # Per bit, p(+s) = sigmoid(4 * inv_temperature * s * z_i): the softmax over codes factorises.
        bit_logits = 4.0 * self.inv_temperature * self.codebook_scale * z_flat
        if self.entropy_mode == "factorized":
            p_bits = torch.sigmoid(bit_logits)
            per_sample = binary_entropy(p_bits).sum(dim=-1).mean()
            codebook = binary_entropy(p_bits.mean(dim=0)).sum()
            return per_sample, codebook
        signs = self.implicit_codebook(scaled=False)  # [K, d] in {-1, +1}
        probs = torch.softmax(0.5 * bit_logits @ signs.T, dim=-1)
        return categorical_entropy(probs).mean(), categorical_entropy(probs.mean(dim=0))

    def implicit_codebook(self, *, scaled: bool = True) -> Tensor:
        """All 2^d codes in index order, [codebook_size, d] (entries +-s, or +-1 when not `scaled`)."""
        indices = torch.arange(self.codebook_size, device=self._bit_values.device)
        bits = (indices.unsqueeze(-1) // self._bit_values) % 2
        return (bits.float() * 2 - 1) * (self.codebook_scale if scaled else 1.0)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Token ids of codes in {-s, +s}^d (the sign pattern read as bits), before any projection."""
        positive = move_channels_last(codes, self.channel_dim) > 0
        return (positive.long() * self._bit_values).sum(dim=-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        check_indices(indices, vocab_size=self.codebook_size, name=type(self).__name__)
        bits = (indices.long().unsqueeze(-1) // self._bit_values) % 2
        codes = (bits.float() * 2 - 1) * self.codebook_scale
        return move_channels_back(self.project_out(codes), self.channel_dim)

    def extra_repr(self) -> str:
        return (
            f"codebook_dim={self.codebook_dim}, dim={self.dim}, spherical={self.spherical}, "
            f"entropy_mode={self.entropy_mode!r}"
        )


class BinarySphericalQuantizer(LFQ):
    """LFQ on the unit sphere (BSQ): inputs are L2-normalised and codes are +-1/sqrt(d) per channel."""

    def __init__(
        self,
        *,
        codebook_dim: int = 16,
        entropy_mode: Literal["auto", "exact", "factorized"] = "factorized",
        **kwargs,
    ) -> None:
        super().__init__(codebook_dim=codebook_dim, entropy_mode=entropy_mode, spherical=True, **kwargs)
