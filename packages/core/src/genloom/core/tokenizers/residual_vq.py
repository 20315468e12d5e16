"""Residual vector quantisation (SoundStream, Zeghidour et al. 2021; EnCodec): N VQs on successive residuals.

Quantizer k codes what quantizers 0..k-1 left over, so every extra codebook refines the reconstruction
and a prefix of the codebooks is a coarser code of the same vector. Quantize dropout (SoundStream)
trains with a random number of codebooks so that any prefix decodes well (bitrate scalability).
"""

from __future__ import annotations

import random

import torch
from torch import Tensor, nn

from genloom.core.tokenizers.base import (
    Quantizer,
    QuantizerOutput,
    check_features,
    check_indices,
    codebook_projections,
    move_channels_back,
    move_channels_last,
)
from genloom.core.tokenizers.errors import TokenIndexError
from genloom.core.tokenizers.vq import VectorQuantizer


class ResidualVQ(Quantizer):
    """N vector quantizers applied to successive residuals; indices have a trailing codebook dim [..., N].

    Args:
        dim: channels of the input.
        num_quantizers: number of residual stages N.
        codebook_size: codes per stage (every stage has its own ids in [0, codebook_size)).
        codebook_dim: codebook space dimension; a projection in/out is added once when it differs from dim.
        channel_dim: 1 for [B, C, H, W], -1 for [B, T, D].
        shared_codebook: every stage uses the same codebook (one VectorQuantizer) instead of its own.
        quantize_dropout: in training, keep only the first n stages, n ~ U{quantize_dropout_min..N} per
            call; the ids of dropped stages are -1 (and `indices_to_codes` treats -1 as "no code").
        beta, use_ema, ema_decay, ema_eps, usage_window, dead_code_after: passed to every stage's
            `VectorQuantizer` (see there).
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        num_quantizers: int = 8,
        codebook_size: int = 1024,
        codebook_dim: int | None = None,
        channel_dim: int = -1,
        shared_codebook: bool = False,
        quantize_dropout: bool = False,
        quantize_dropout_min: int = 1,
        beta: float = 0.25,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        ema_eps: float = 1e-5,
        usage_window: int = 100,
        dead_code_after: int | None = None,
    ) -> None:
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}")
        if not 1 <= quantize_dropout_min <= num_quantizers:
            raise ValueError(
                f"quantize_dropout_min must lie in [1, num_quantizers={num_quantizers}], got {quantize_dropout_min}"
            )
        self.dim = dim
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim or dim
        self.channel_dim = channel_dim
        self.shared_codebook = shared_codebook
        self.quantize_dropout = quantize_dropout
        self.quantize_dropout_min = quantize_dropout_min

        self.project_in, self.project_out = codebook_projections(dim, self.codebook_dim)
        stage_kwargs = dict(
            dim=self.codebook_dim,
            codebook_size=codebook_size,
            channel_dim=-1,
            beta=beta,
            use_ema=use_ema,
            ema_decay=ema_decay,
            ema_eps=ema_eps,
            usage_window=usage_window,
            dead_code_after=dead_code_after,
        )
        n_modules = 1 if shared_codebook else num_quantizers
        self.layers = nn.ModuleList([VectorQuantizer(**stage_kwargs) for _ in range(n_modules)])

    def stage(self, k: int) -> VectorQuantizer:
        """The VectorQuantizer of stage k (the single shared one when `shared_codebook`)."""
        return self.layers[0 if self.shared_codebook else k]

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_features(z, channels=self.dim, channel_dim=self.channel_dim, name="ResidualVQ")
        x = self.project_in(move_channels_last(z, self.channel_dim))
        n_active = self.num_quantizers
        if self.training and self.quantize_dropout:
            n_active = random.randint(self.quantize_dropout_min, self.num_quantizers)

        residual = x
        quantized = torch.zeros_like(x)
        indices, losses = [], []
        metrics: dict[str, Tensor] = {}
        for k in range(self.num_quantizers):
            if k >= n_active:
                indices.append(torch.full(x.shape[:-1], -1, dtype=torch.long, device=x.device))
                continue
            out = self.stage(k)(residual)
            step_codes = out.codes.detach()
            quantized = quantized + step_codes
            residual = residual - step_codes
            indices.append(out.indices)
            losses.append(out.loss)
            metrics[f"perplexity_{k}"] = out.metrics["perplexity"]
            metrics[f"codebook_usage_{k}"] = out.metrics["codebook_usage"]
        metrics["quantization_error"] = residual.detach().float().square().mean()
        metrics["active_quantizers"] = torch.tensor(float(n_active))

        codes = x + (quantized - x).detach()  # one straight-through estimator for the whole stack
        codes = move_channels_back(self.project_out(codes), self.channel_dim)
        return QuantizerOutput(codes, torch.stack(indices, dim=-1), torch.stack(losses).sum(), metrics)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Sum of the stage codes for ids [..., n] with n <= N (a prefix of stages); -1 means no code."""
        check_indices(indices, vocab_size=self.codebook_size, name="ResidualVQ", allow_negative_one=True)
        if indices.ndim < 1 or not 1 <= indices.shape[-1] <= self.num_quantizers:
            raise TokenIndexError(
                f"ResidualVQ expects indices with a trailing stage dim of size 1..{self.num_quantizers}, "
                f"got shape {tuple(indices.shape)}"
            )
        indices = indices.long()
        total = None
        for k in range(indices.shape[-1]):
            ids = indices[..., k]
            stage_codes = self.stage(k).indices_to_codes(ids.clamp_min(0))
            stage_codes = stage_codes * (ids >= 0).unsqueeze(-1).to(stage_codes.dtype)
            total = stage_codes if total is None else total + stage_codes
        return move_channels_back(self.project_out(total), self.channel_dim)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_quantizers={self.num_quantizers}, codebook_size={self.codebook_size}, "
            f"shared_codebook={self.shared_codebook}, quantize_dropout={self.quantize_dropout}"
        )
