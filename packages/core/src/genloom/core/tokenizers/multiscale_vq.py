"""Multi-scale residual VQ of VAR (Tian et al. 2024, arXiv:2404.02905, "next-scale prediction").

A feature map [B, C, H, W] is coded as K token maps of growing size (patch_nums, e.g. 1,2,3,...,16), all
from ONE shared codebook: at scale k the residual is area-downsampled to (s_k, s_k), every vector is
replaced by its nearest code, the code map is bicubic-upsampled back to (H, W), refined by a small conv
"Phi" (h*(1-r) + conv(h)*r) and subtracted from the residual. The sum of all refined maps is f_hat.

This module reproduces the quantizer of FoundationVision/VAR's VQVAE (`models/quant.py`,
`VectorQuantizer2`) operation for operation, including its state-dict layout: VAR's `quantize.*` weights
(`embedding.weight`, `quant_resi.qresi_ls.<i>.{weight,bias}`, `ema_vocab_hit_SV`) load with strict=True
after stripping the `quantize.` prefix. The VAR-transformer helpers `idxBl_to_var_input` (teacher forcing)
and `get_next_autoregressive_input` (sampling) keep VAR's names and argument order.

One addition to VAR: `dead_code_after` restarts codes that no scale picked for that many training steps
with residual vectors of the current batch (the plain VQ's restart, `vq.restart_idle_codes`); without it
the codebook collapses on small data sets. Its state is non-persistent, so the state-dict layout stays VAR's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from genloom.core.nn.resample import upsample_bicubic
from genloom.core.tokenizers.base import Quantizer, QuantizerOutput, check_features, check_indices
from genloom.core.tokenizers.errors import TokenIndexError, TokenizerInputError
from genloom.core.tokenizers.vq import mark_used_codes, nearest_code, restart_idle_codes

DEFAULT_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


# ----------------------------------------------------------------------------------------------------
# Phi: the residual refinement convs, and the three ways VAR shares them across scales.


class Phi(nn.Conv2d):
    """3x3 conv blended with its input: h * (1 - r) + conv(h) * r, r = |quant_resi|."""

    def __init__(self, channels: int, quant_resi: float) -> None:
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(quant_resi)

    def forward(self, h: Tensor) -> Tensor:
        return h.mul(1 - self.resi_ratio) + super().forward(h).mul_(self.resi_ratio)


def _make_phi(channels: int, quant_resi: float) -> nn.Module:
    # VAR drops the conv entirely when the ratio is 0 (plain residual quantisation).
    return Phi(channels, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity()


def _phi_ticks(count: int) -> np.ndarray:
    """Scale positions (in [0, 1]) that the `count` convs serve; VAR's spacing, computed as VAR does."""
    if count == 4:
        return np.linspace(1 / 3 / count, 1 - 1 / 3 / count, count)
    return np.linspace(1 / 2 / count, 1 - 1 / 2 / count, count)


class PhiShared(nn.Module):
    """One Phi for every scale (VAR share_quant_resi=1); state-dict key `qresi`."""

    def __init__(self, phi: nn.Module) -> None:
        super().__init__()
        self.qresi = phi

    def select(self, at: float) -> nn.Module:
        return self.qresi


class PhiPartiallyShared(nn.Module):
    """A few Phis spread evenly over the scale positions; scale at position t in [0, 1] uses the nearest
    one (VAR share_quant_resi=n>1, default 4); state-dict keys `qresi_ls.<i>`."""

    def __init__(self, phis: Sequence[nn.Module]) -> None:
        super().__init__()
        self.qresi_ls = nn.ModuleList(phis)
        self.ticks = _phi_ticks(len(phis))

    def select(self, at: float) -> nn.Module:
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - at)))]

    def extra_repr(self) -> str:
        return f"ticks={self.ticks}"


class PhiNonShared(nn.ModuleList):
    """One Phi per scale (VAR share_quant_resi=0); state-dict keys `<i>`."""

    def __init__(self, phis: Sequence[nn.Module]) -> None:
        super().__init__(phis)
        self.ticks = _phi_ticks(len(phis))

    def select(self, at: float) -> nn.Module:
        return self[int(np.argmin(np.abs(self.ticks - at)))]

    def extra_repr(self) -> str:
        return f"ticks={self.ticks}"


# ----------------------------------------------------------------------------------------------------


class MultiScaleResidualVQ(Quantizer):
    """VAR's multi-scale residual quantizer over channel-first feature maps [B, dim, H, W].

    Args:
        dim: feature channels (VAR's Cvae).
        codebook_size: codes in the one shared codebook (VAR's vocab_size V).
        patch_nums: side of the token map at every scale, smallest first; the last one must equal the
            feature map's size. Ints (square maps) or (h, w) pairs.
        beta: commitment weight of the training loss.
        quant_resi: Phi's blending ratio r (0 disables the convs).
        share_quant_resi: 0 = one Phi per scale, 1 = one Phi for all scales, n > 1 = n Phis spread
            over the scales (VAR's default 4).
        num_phi: number of Phis when share_quant_resi is 0 (VAR's default_qresi_counts; default one per scale).
        l2_normalize: cosine lookup (VAR's `using_znorm`); VAR's released tokenizer uses squared L2.
        dead_code_after: when set, codes that no scale picked for this many training steps are replaced
            by random vectors the scales quantized in the current batch (not in VAR; None: off, as VAR).

    Token layout: scale-major (smallest scale first), row-major inside a scale; `forward(f).indices`
    is the [B, L] sequence, L = sum(h_k * w_k). Every method also accepts VAR's list of [B, h_k*w_k].
    """

    def __init__(
        self,
        *,
        dim: int = 32,
        codebook_size: int = 4096,
        patch_nums: Sequence[int | tuple[int, int]] = DEFAULT_PATCH_NUMS,
        beta: float = 0.25,
        quant_resi: float = 0.5,
        share_quant_resi: int = 4,
        num_phi: int | None = None,
        l2_normalize: bool = False,
        dead_code_after: int | None = None,
    ) -> None:
        super().__init__()
        if not patch_nums:
            raise ValueError("patch_nums must list at least one scale")
        if dead_code_after is not None and dead_code_after < 1:
            raise ValueError(
                f"dead_code_after must be a positive number of steps or None, got {dead_code_after}"
            )
        if share_quant_resi < 0:
            raise ValueError(f"share_quant_resi must be >= 0, got {share_quant_resi}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.patch_nums = [p if isinstance(p, int) else (int(p[0]), int(p[1])) for p in patch_nums]
        self.scale_sizes: list[tuple[int, int]] = [
            (p, p) if isinstance(p, int) else p for p in self.patch_nums
        ]
        self.num_scales = len(self.scale_sizes)
        self.beta = beta
        self.quant_resi_ratio = quant_resi
        self.l2_normalize = l2_normalize
        self.dead_code_after = dead_code_after

        if share_quant_resi == 0:
            self.quant_resi = PhiNonShared(
                [_make_phi(dim, quant_resi) for _ in range(num_phi or self.num_scales)]
            )
        elif share_quant_resi == 1:
            self.quant_resi = PhiShared(_make_phi(dim, quant_resi))
        else:
            self.quant_resi = PhiPartiallyShared(
                [_make_phi(dim, quant_resi) for _ in range(share_quant_resi)]
            )

        # Per-scale EMA of code hits (VAR's buffer; its name kept so that official checkpoints load).
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(self.num_scales, codebook_size))
        self._record_hit = 0
        self.embedding = nn.Embedding(codebook_size, dim)
        # Dead-code restart state (as VectorQuantizer's), non-persistent so VAR checkpoints load strictly;
        # a resumed run starts every code with a fresh grace period.
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer(
            "last_used_step", torch.full((codebook_size,), -1, dtype=torch.long), persistent=False
        )
        self.register_buffer("codes_restarted", torch.zeros((), dtype=torch.long), persistent=False)

    # ------------------------------------------------------------------ layout helpers

    @property
    def num_tokens(self) -> int:
        """Tokens of one image over all scales (L)."""
        return sum(h * w for h, w in self.scale_sizes)

    def phi(self, si: int, num_scales: int | None = None) -> nn.Module:
        """The Phi used at scale index `si` (chosen by the scale's position si / (SN - 1))."""
        sn = num_scales or self.num_scales
        return self.quant_resi.select(si / (sn - 1) if sn > 1 else 0.0)

    def split_scales(self, indices: Tensor | Sequence[Tensor]) -> list[Tensor]:
        """[B, L] token sequence (or VAR's list) -> list of [B, h_k * w_k], validated."""
        if isinstance(indices, Tensor):
            if indices.ndim != 2 or indices.shape[1] != self.num_tokens:
                raise TokenIndexError(
                    f"MultiScaleResidualVQ expects indices [B, L={self.num_tokens}] or a list of "
                    f"[B, h*w] per scale, got shape {tuple(indices.shape)}"
                )
            parts = list(indices.split([h * w for h, w in self.scale_sizes], dim=1))
        else:
            parts = list(indices)
        for si, part in enumerate(parts):
            check_indices(part, vocab_size=self.codebook_size, name=f"MultiScaleResidualVQ scale {si}")
            h, w = self.scale_sizes[si] if si < self.num_scales else (0, 0)
            if si >= self.num_scales or part.ndim != 2 or part.shape[1] != h * w:
                raise TokenIndexError(
                    f"scale {si}: expected indices [B, {h * w}] for patch size {(h, w)} "
                    f"({self.num_scales} scales), got {tuple(part.shape)}"
                )
        return parts

    def _check_feature_map(self, f: Tensor) -> None:
        check_features(f, channels=self.dim, channel_dim=1, name="MultiScaleResidualVQ", min_ndim=4)
        if f.ndim != 4 or tuple(f.shape[2:]) != self.scale_sizes[-1]:
            raise TokenizerInputError(
                f"MultiScaleResidualVQ expects a feature map [B, {self.dim}, {self.scale_sizes[-1][0]}, "
                f"{self.scale_sizes[-1][1]}] (last patch size), got shape {tuple(f.shape)}"
            )

    def _lookup(self, z_nc: Tensor) -> Tensor:
        return nearest_code(z_nc, self.embedding.weight.data, cosine=self.l2_normalize)

    def _scale_embedding(self, idx_bl: Tensor, si: int) -> Tensor:
        """Codes of one scale as a map [B, C, h, w] (VAR's `embedding(idx).transpose(1, 2).view(...)`)."""
        h, w = self.scale_sizes[si]
        return self.embedding(idx_bl).transpose(1, 2).reshape(idx_bl.shape[0], self.dim, h, w)

    # ------------------------------------------------------------------ quantisation

    def forward(self, f: Tensor) -> QuantizerOutput:
        """Quantize all scales; codes = f_hat (straight-through), loss = VAR's mean over scales of
        beta * ||sg(f_hat_k) - f||^2 + ||f_hat_k - sg(f)||^2 (f_hat_k: the running sum after scale k)."""
        self._check_feature_map(f)
        f = f.float()
        batch, channels, height, width = f.shape
        f_no_grad = f.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        loss = f.new_zeros(())
        hits = torch.zeros(self.codebook_size, device=f.device)
        restart = self.training and self.dead_code_after is not None
        global_hits, looked_up = torch.zeros_like(hits), []
        indices = []
        last = self.num_scales - 1
        for si, (ph, pw) in enumerate(self.scale_sizes):
            z = f_rest if si == last else F.interpolate(f_rest, size=(ph, pw), mode="area")
            z_nc = z.permute(0, 2, 3, 1).reshape(-1, channels)
            idx = self._lookup(z_nc)
            hit = idx.bincount(minlength=self.codebook_size).float()
            if self.training:
                global_hits += self._record_hits(si, hit)
            if restart:
                looked_up.append(z_nc.clone())  # may view f_rest, changed below
            hits += hit
            h = self.embedding(idx.view(batch, ph, pw)).permute(0, 3, 1, 2)
            if si != last:
                h = upsample_bicubic(h, (height, width))
            h = self.phi(si)(h.contiguous())
            f_hat = f_hat + h
            f_rest -= h.detach()
            indices.append(idx.view(batch, ph * pw))
            loss = loss + F.mse_loss(f_hat.detach(), f).mul_(self.beta) + F.mse_loss(f_hat, f_no_grad)
        loss = loss / self.num_scales
        codes = (f_hat.detach() - f_no_grad).add_(f)  # straight-through, as VAR writes it
        if self.training:
            mark_used_codes(self.train_steps, self.last_used_step, global_hits)
        if restart:  # after the lookups: this step's codes and loss are unaffected
            self._restart(torch.cat(looked_up))

        probs = hits / hits.sum()
        metrics = {
            "perplexity": torch.exp(-(probs * probs.clamp_min(1e-12).log()).sum()),
            "codebook_usage": self.codebook_usage(tokens_per_step=batch * height * width),
            "quantization_error": F.mse_loss(f_hat.detach(), f_no_grad),
        }
        return QuantizerOutput(codes, torch.cat(indices, dim=1), loss, metrics)

    @torch.no_grad()
    def quantize_scales(self, f: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Indices per scale [B, h_k*w_k] and accumulated f_hat after every scale [B, C, H, W]
        (VAR's `f_to_idxBl_or_fhat`, both outputs at once)."""
        self._check_feature_map(f)
        batch, channels, height, width = f.shape
        f_rest = f.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        indices, f_hats = [], []
        last = self.num_scales - 1
        for si, (ph, pw) in enumerate(self.scale_sizes):
            z = f_rest if si == last else F.interpolate(f_rest, size=(ph, pw), mode="area")
            idx = self._lookup(z.permute(0, 2, 3, 1).reshape(-1, channels))
            h = self.embedding(idx.view(batch, ph, pw)).permute(0, 3, 1, 2)
            if si != last:
                h = upsample_bicubic(h, (height, width))
            h = self.phi(si)(h.contiguous())
            f_hat.add_(h)
            f_rest.sub_(h)
            indices.append(idx.reshape(batch, ph * pw))
            f_hats.append(f_hat.clone())
        return indices, f_hats

    def indices_to_codes(
        self, indices: Tensor | Sequence[Tensor], *, per_scale: bool = False
    ) -> Tensor | list[Tensor]:
        """f_hat [B, C, H, W] from all scales' ids ([B, L] or a list); with `per_scale`, the list of
        f_hat after scales 0..k for every k (VAR's `embed_to_fhat(all_to_max_scale=True)`)."""
        parts = self.split_scales(indices)
        if len(parts) != self.num_scales:
            raise TokenIndexError(f"expected ids for all {self.num_scales} scales, got {len(parts)}")
        height, width = self.scale_sizes[-1]
        batch = parts[0].shape[0]
        f_hat = self.embedding.weight.new_zeros(batch, self.dim, height, width, dtype=torch.float32)
        out = []
        for si, idx in enumerate(parts):
            h = self._scale_embedding(idx.long(), si)
            if si < self.num_scales - 1:
                h = upsample_bicubic(h, (height, width))
            f_hat.add_(self.phi(si)(h))
            out.append(f_hat.clone())
        return out if per_scale else out[-1]

    # ------------------------------------------------------------------ helpers of the VAR transformer

    def idxBl_to_var_input(self, gt_ms_idx_Bl: Tensor | Sequence[Tensor]) -> Tensor | None:
        """Teacher-forcing input of the VAR transformer: for every scale k < K-1, the accumulated f_hat
        (scales 0..k, at full size) area-downsampled to scale k+1's size and flattened; [B, L - h0*w0, C]."""
        parts = self.split_scales(gt_ms_idx_Bl)
        height, width = self.scale_sizes[-1]
        batch = parts[0].shape[0]
        f_hat = parts[0].new_zeros(batch, self.dim, height, width, dtype=torch.float32)
        next_scales = []
        for si in range(self.num_scales - 1):
            h = upsample_bicubic(self._scale_embedding(parts[si].long(), si), (height, width))
            f_hat.add_(self.phi(si)(h))
            next_scales.append(
                F.interpolate(f_hat, size=self.scale_sizes[si + 1], mode="area")
                .view(batch, self.dim, -1)
                .transpose(1, 2)
            )
        return torch.cat(next_scales, dim=1) if next_scales else None

    def get_next_autoregressive_input(
        self, si: int, SN: int, f_hat: Tensor, h_BChw: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One sampling step of VAR: add scale `si`'s code map h [B, C, h_si, w_si] (upsampled, Phi-refined)
        to `f_hat` IN PLACE (as VAR does) and return (f_hat, next input): f_hat area-downsampled to the
        next scale's size, or f_hat itself after the last scale."""
        height, width = self.scale_sizes[-1]
        if si != SN - 1:
            h = self.phi(si, SN)(upsample_bicubic(h_BChw, (height, width)))
            f_hat.add_(h)
            return f_hat, F.interpolate(f_hat, size=self.scale_sizes[si + 1], mode="area")
        f_hat.add_(self.phi(si, SN)(h_BChw))
        return f_hat, f_hat

    # ------------------------------------------------------------------ usage statistics

    @torch.no_grad()
    def _record_hits(self, si: int, hit: Tensor) -> Tensor:
        """Fold scale `si`'s hit counts into VAR's EMA; returns them summed over ranks."""
        if dist.is_available() and dist.is_initialized():
            hit = hit.clone()
            dist.all_reduce(hit)
        row = self.ema_vocab_hit_SV[si]
        if self._record_hit == 0:
            row.copy_(hit)
        elif self._record_hit < 100:
            row.mul_(0.9).add_(hit.mul(0.1))
        else:
            row.mul_(0.99).add_(hit.mul(0.01))
        self._record_hit += 1  # counted per scale, as VAR does
        return hit

    @torch.no_grad()
    def _restart(self, vectors: Tensor) -> Tensor:
        """Restart codes idle for `dead_code_after` steps from `vectors` [N, dim] (every scale's lookups)."""
        dead = restart_idle_codes(
            self.embedding.weight.data,
            self.train_steps,
            self.last_used_step,
            after=self.dead_code_after,
            vectors=vectors,
        )
        self.codes_restarted += dead.sum()
        return dead

    def codebook_usage(self, *, tokens_per_step: int) -> Tensor:
        """Mean over scales of the fraction of codes whose EMA hit count reaches VAR's margin
        (8% of a uniform share of `tokens_per_step` full-size tokens, summed over ranks)."""
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        margin = world * tokens_per_step / self.codebook_size * 0.08
        return (self.ema_vocab_hit_SV >= margin).float().mean()

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, patch_nums={self.patch_nums}, "
            f"quant_resi={self.quant_resi_ratio}, l2_normalize={self.l2_normalize}"
        )
