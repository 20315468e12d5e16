"""Continuous latents of a KL autoencoder (LDM / Stable Diffusion / MAR's KL-16): a diagonal Gaussian.

The encoder emits "moments" (mean and log-variance concatenated along the channel dim); the latent is a
sample (training) or the mean (inference), regularised by KL(q || N(0, I)). Generative models see the
latent times a scale factor that brings it to roughly unit variance (MAR's KL-16 uses 0.2325, SD 0.18215)
and the decoder gets it divided back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genloom.core.tokenizers.errors import TokenizerInputError

MAR_KL16_SCALE = 0.2325  # latent scale factor of MAR's KL-16 tokenizer (LTH14/mar, vae_embed_dim 16)

# LDM's clamp of the log-variance: keeps exp() finite for untrained or diverging encoders.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over tensors of any shape (batch first).

    Build it from the encoder output with `from_moments`; `sample`, `mode`, `kl` and `nll` follow LDM's
    `DiagonalGaussianDistribution` (log-variance clamped to [-30, 20]; kl and nll summed over all
    non-batch dims unless `dims` says otherwise).
    """

    def __init__(self, mean: Tensor, logvar: Tensor, *, deterministic: bool = False) -> None:
        if mean.shape != logvar.shape:
            raise TokenizerInputError(
                f"mean and logvar must have the same shape, got {tuple(mean.shape)} and {tuple(logvar.shape)}"
            )
        self.mean = mean
        self.logvar = torch.clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)
        self.deterministic = deterministic
        if deterministic:  # a point mass at the mean (LDM keeps logvar and zeroes std / var)
            self.std = torch.zeros_like(mean)
            self.var = torch.zeros_like(mean)
        else:
            self.std = torch.exp(0.5 * self.logvar)
            self.var = torch.exp(self.logvar)

    @classmethod
    def from_moments(
        cls, moments: Tensor, *, channel_dim: int = 1, deterministic: bool = False
    ) -> DiagonalGaussian:
        """Split `moments` [.., 2*C, ..] into (mean, logvar) halves along `channel_dim`."""
        if moments.ndim < 2 or not moments.is_floating_point():
            raise TokenizerInputError(
                f"moments must be a floating tensor [B, 2*C, ...], got {moments.dtype} {tuple(moments.shape)}"
            )
        if moments.shape[channel_dim] % 2:
            raise TokenizerInputError(
                f"moments need an even channel count (mean and logvar) along dim {channel_dim}, "
                f"got shape {tuple(moments.shape)}"
            )
        mean, logvar = torch.chunk(moments, 2, dim=channel_dim)
        return cls(mean, logvar, deterministic=deterministic)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """mean + std * eps, eps ~ N(0, I) (reparameterised: differentiable in mean and logvar)."""
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * noise

    def mode(self) -> Tensor:
        """The most likely latent (the mean)."""
        return self.mean

    def _sum_dims(self, dims: Sequence[int] | None) -> list[int]:
        return list(dims) if dims is not None else list(range(1, self.mean.ndim))

    def kl(self, other: DiagonalGaussian | None = None, *, dims: Sequence[int] | None = None) -> Tensor:
        """KL(self || other) per batch element (other defaults to N(0, I)); 0 when deterministic."""
        if self.deterministic:
            return self.mean.new_zeros(self.mean.shape[0])
        reduce = self._sum_dims(dims)
        if other is None:
            return 0.5 * torch.sum(self.mean.square() + self.var - 1.0 - self.logvar, dim=reduce)
        return 0.5 * torch.sum(
            (self.mean - other.mean).square() / other.var
            + self.var / other.var
            - 1.0
            - self.logvar
            + other.logvar,
            dim=reduce,
        )

    def nll(self, x: Tensor, *, dims: Sequence[int] | None = None) -> Tensor:
        """Negative log-likelihood of `x` per batch element (in nats)."""
        if self.deterministic:
            return self.mean.new_zeros(self.mean.shape[0])
        reduce = self._sum_dims(dims)
        return 0.5 * torch.sum(
            math.log(2.0 * math.pi) + self.logvar + (x - self.mean).square() / self.var, dim=reduce
        )


@dataclass
class LatentOutput:
    """What `KLBottleneck.forward` returns: scaled latents for the generative model, the posterior, and the
    KL regulariser (mean over the batch of the per-element KL)."""

    latents: Tensor
    posterior: DiagonalGaussian
    kl: Tensor


class KLBottleneck(nn.Module):
    """Encoder moments -> scaled continuous latents, the continuous counterpart of a `Quantizer`.

    Args:
        latent_dim: channels of the latent (the moments have twice as many).
        scale_factor, shift_factor: latents seen by the generative model are (z - shift) * scale.
        channel_dim: channel dim of the moments (1 for [B, 2C, H, W], -1 for [B, T, 2C]).
        sample_in_eval: sample the posterior also in eval mode (MAR does when making training tokens);
            otherwise eval mode returns the mean.
    """

    def __init__(
        self,
        *,
        latent_dim: int = 16,
        scale_factor: float = MAR_KL16_SCALE,
        shift_factor: float = 0.0,
        channel_dim: int = 1,
        sample_in_eval: bool = False,
    ) -> None:
        super().__init__()
        if scale_factor == 0:
            raise ValueError("scale_factor must be non-zero")
        self.latent_dim = latent_dim
        self.scale_factor = scale_factor
        self.shift_factor = shift_factor
        self.channel_dim = channel_dim
        self.sample_in_eval = sample_in_eval

    def forward(self, moments: Tensor, *, generator: torch.Generator | None = None) -> LatentOutput:
        if moments.ndim < 2 or moments.shape[self.channel_dim] != 2 * self.latent_dim:
            raise TokenizerInputError(
                f"KLBottleneck expects moments with {2 * self.latent_dim} channels (mean + logvar) along dim "
                f"{self.channel_dim}, got shape {tuple(moments.shape)}"
            )
        posterior = DiagonalGaussian.from_moments(moments, channel_dim=self.channel_dim)
        z = posterior.sample(generator) if (self.training or self.sample_in_eval) else posterior.mode()
        return LatentOutput(self.scale(z), posterior, posterior.kl().mean())

    def scale(self, z: Tensor) -> Tensor:
        """Autoencoder latent -> latent seen by the generative model."""
        return (z - self.shift_factor) * self.scale_factor

    def unscale(self, latents: Tensor) -> Tensor:
        """Latent of the generative model -> autoencoder latent (what the decoder takes)."""
        return latents / self.scale_factor + self.shift_factor

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, scale_factor={self.scale_factor}, shift_factor={self.shift_factor}"
