"""DiffuSeq (Gong et al. 2023): continuous embedding diffusion for seq2seq with partial noising.

A pair is laid out as one sequence `[source (padded) | <bos> | target <eos> (padded)]` and embedded with a
learned word embedding. Forward noising (sqrt schedule of Diffusion-LM) touches the target half only; the
source half stays clean at every step and anchors the denoiser, a bidirectional transformer (core
`Transformer`, continuous inputs plus a time embedding) that predicts z_0 (x0-parameterisation). Loss, per
target position: ||z_0 - f(z_t, t)||^2 (at t = 0 the target is the clean embedding), the prior term
||sqrt(abar_T) z_0||^2, and the rounding (anchor) term -log p(w | z_0) with p(w | z) = softmax(z E^T), which
keeps the embedding from collapsing. Sampling: DDPM posterior steps on a respaced grid, each x0-estimate
clamped to its nearest word embedding, the source half reset to its clean embedding after every step.
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
from genloom.core.nn import Transformer
from genloom.text.backbone import text_transformer_config
from genloom.text.errors import TextInputError
from genloom.text.nat import Translation
from genloom.text.seq2seq import strip_specials
from genloom.text.specials import BOS_ID, EOS_ID, PAD_ID
from genloom.text.tasks import Seq2SeqBatch

__all__ = ["DiffuSeq", "DiffuSeqConfig", "sqrt_alpha_bar"]


@dataclass
class DiffuSeqConfig:
    """Architecture and diffusion settings (JSON round-trip with to_dict / from_dict)."""

    vocab_size: int = 1000
    embed_dim: int = 16  # the diffused word-embedding space (DiffuSeq: 128 under a 768-wide transformer)
    dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    max_source_length: int = 16
    max_target_length: int = 16
    diffusion_steps: int = 200
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.vocab_size <= EOS_ID + 1:
            raise TextInputError(f"vocab_size must exceed the specials, got {self.vocab_size}")
        if self.diffusion_steps < 2:
            raise TextInputError(f"diffusion_steps must be >= 2, got {self.diffusion_steps}")

    @property
    def target_width(self) -> int:
        return self.max_target_length + 1  # room for <eos>

    @property
    def seq_len(self) -> int:
        return self.max_source_length + 1 + self.target_width

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffuSeqConfig:
        check_field_names(cls, data, error=TextInputError)
        return cls(**data)


def sqrt_alpha_bar(steps: int, *, offset: float = 1e-4) -> Tensor:
    """Diffusion-LM's sqrt schedule abar(t) = 1 - sqrt(t / T + offset) at t = 1..T, float64 [T]."""
    t = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    return (1.0 - torch.sqrt(t + offset)).clamp(min=1e-8)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding [B, dim] of integer steps t [B]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float().unsqueeze(1) * freqs.unsqueeze(0)
    out = torch.cat([angles.cos(), angles.sin()], dim=1)
    return F.pad(out, (0, dim - 2 * half))


class DiffuSeq(nn.Module):
    """Partial-noising embedding diffusion translator: `loss(batch)` and `translate(source, lengths)`."""

    def __init__(self, config: DiffuSeqConfig) -> None:
        super().__init__()
        self.config = config
        self.word_embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        nn.init.normal_(self.word_embedding.weight, std=1.0)
        self.input_proj = nn.Linear(config.embed_dim, config.dim)
        self.time_mlp = nn.Sequential(
            nn.Linear(config.dim, 4 * config.dim), nn.SiLU(), nn.Linear(4 * config.dim, config.dim)
        )
        self.backbone = Transformer(
            text_transformer_config(
                dim=config.dim,
                n_layers=config.n_layers,
                n_heads=config.n_heads,
                vocab_size=None,
                max_seq_len=config.seq_len,
                mask="bidirectional",
                dropout=config.dropout,
            )
        )
        self.output_proj = nn.Linear(config.dim, config.embed_dim)
        self.register_buffer("alpha_bar", sqrt_alpha_bar(config.diffusion_steps).float(), persistent=False)

    # ------------------------------------------------------------------ layout and pieces
    def _layout(self, source: Tensor, source_length: Tensor, target: Tensor | None, target_length) -> Tensor:
        """[B, seq_len] ids: source padded, <bos> separator, target + <eos> padded (pads if no target)."""
        c = self.config
        if int(source_length.max()) > c.max_source_length or int(source_length.min()) < 1:
            raise TextInputError(f"source lengths must lie in [1, {c.max_source_length}]")
        batch = source.shape[0]
        ids = torch.full((batch, c.seq_len), PAD_ID, dtype=torch.long, device=source.device)
        width = min(source.shape[1], c.max_source_length)
        ids[:, :width] = source[:, :width]
        ids[:, : c.max_source_length] *= (
            torch.arange(c.max_source_length, device=source.device) < source_length.unsqueeze(1)
        ).long()
        ids[:, c.max_source_length] = BOS_ID
        if target is not None:
            if int(target_length.max()) > c.max_target_length:
                raise TextInputError(
                    f"target of {int(target_length.max())} tokens exceeds {c.max_target_length}"
                )
            start = c.max_source_length + 1
            width = min(target.shape[1], c.max_target_length)
            target = target[:, :width]
            keep = torch.arange(width, device=target.device) < target_length.unsqueeze(1)
            ids[:, start : start + width] = target * keep.long()
            ids[torch.arange(batch, device=ids.device), start + target_length] = EOS_ID
        return ids

    def target_mask(self, batch: int, device: torch.device) -> Tensor:
        """[B, seq_len, 1] bool: True on the target half (the part that is noised)."""
        positions = torch.arange(self.config.seq_len, device=device)
        return (positions > self.config.max_source_length).view(1, -1, 1).expand(batch, -1, 1)

    def denoise(self, z: Tensor, t: Tensor) -> Tensor:
        """x0-prediction f(z_t, t): [B, L, embed_dim]."""
        time = timestep_embedding(t, self.config.dim).to(z.dtype)  # float32 sinusoids -> the weights' dtype
        hidden = self.input_proj(z) + self.time_mlp(time).unsqueeze(1)
        return self.output_proj(self.backbone.features(embeddings=hidden))

    def word_logits(self, z: Tensor) -> Tensor:
        """log p(w | z) up to a constant: z E^T, [B, L, V] (the rounding distribution)."""
        return z.float() @ self.word_embedding.weight.float().T

    def nearest_words(self, z: Tensor) -> Tensor:
        """Ids of the nearest word embeddings in L2 distance, [B, L]."""
        weight = self.word_embedding.weight.float()
        return (2 * z.float() @ weight.T - weight.pow(2).sum(-1)).argmax(-1)

    # ------------------------------------------------------------------ training
    def loss(self, batch: Seq2SeqBatch, *, glance_ratio: float = 0.0) -> Tensor:
        """MSE of the x0-prediction + prior term + rounding (anchor) cross-entropy, target half only."""
        ids = self._layout(batch.source, batch.source_length, batch.target, batch.target_length)
        b, device = ids.shape[0], ids.device
        noised = self.target_mask(b, device)
        mean = self.word_embedding(ids)
        z0 = mean + torch.sqrt(1.0 - self.alpha_bar[0]) * torch.randn_like(mean)
        t = torch.randint(0, self.config.diffusion_steps, (b,), device=device)
        abar = self.alpha_bar[t].view(-1, 1, 1)
        zt = abar.sqrt() * z0 + (1.0 - abar).sqrt() * torch.randn_like(z0)
        zt = torch.where(noised, zt, z0)  # partial noising: the source half stays clean
        predicted = self.denoise(zt, t)
        target = torch.where((t == 0).view(-1, 1, 1), mean, z0)
        weight = noised.squeeze(-1).float()
        count = weight.sum() * self.config.embed_dim
        mse = ((predicted - target).pow(2) * noised).sum() / count
        prior = ((self.alpha_bar[-1].sqrt() * z0).pow(2) * noised).sum() / count
        rounding = F.cross_entropy(self.word_logits(z0).flatten(0, 1), ids.flatten(), reduction="none")
        rounding = (rounding * weight.flatten()).sum() / weight.sum()
        return mse + prior + rounding

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def translate(
        self,
        source: Tensor,
        source_length: Tensor,
        *,
        steps: int = 50,
        clamp: bool = True,
        generator: torch.Generator | None = None,
    ) -> Translation:
        """Sample targets with `steps` posterior steps (respaced from diffusion_steps); `clamp` rounds each
        x0-estimate to its nearest word embedding. `decoder_passes` = steps."""
        c = self.config
        if not 1 <= steps <= c.diffusion_steps:
            raise TextInputError(f"steps must lie in [1, {c.diffusion_steps}], got {steps}")
        ids = self._layout(source, source_length, None, None)
        b, device = ids.shape[0], ids.device
        noised = self.target_mask(b, device)
        anchor = self.word_embedding(ids)
        noise = torch.randn(anchor.shape, generator=generator).to(device, anchor.dtype)  # the weights' dtype
        z = torch.where(noised, noise, anchor)
        grid = torch.linspace(c.diffusion_steps - 1, 0, steps).round().long().unique_consecutive().tolist()
        alpha_bar = self.alpha_bar.double()
        for i, t in enumerate(grid):
            x0 = self.denoise(z, torch.full((b,), t, device=device, dtype=torch.long))
            if clamp:
                x0 = self.word_embedding(self.nearest_words(x0))
            if i == len(grid) - 1:
                z = x0
                break
            s = grid[i + 1]
            a_t, a_s = float(alpha_bar[t]), float(alpha_bar[s])
            beta = 1.0 - a_t / a_s
            coef_x0 = math.sqrt(a_s) * beta / (1.0 - a_t)
            coef_zt = math.sqrt(a_t / a_s) * (1.0 - a_s) / (1.0 - a_t)
            std = math.sqrt(beta * (1.0 - a_s) / (1.0 - a_t))
            fresh = torch.randn(z.shape, generator=generator).to(device, z.dtype)
            z = coef_x0 * x0 + coef_zt * z + std * fresh
            z = torch.where(noised, z, anchor)
        words = self.nearest_words(z)[:, c.max_source_length + 1 :]
        words = torch.where(words == BOS_ID, torch.full_like(words, PAD_ID), words)
        return Translation(strip_specials(words), decoder_passes=len(grid))
