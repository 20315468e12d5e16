"""MaskGIT (Chang et al. 2022): a bidirectional transformer fills masked VQ tokens in a few parallel steps.

Training masks a cosine-scheduled fraction of each image's tokens and predicts them; sampling starts from an
all-mask grid and uses core's `MaskedSampler` (cosine schedule, Gumbel-noised confidence with a choice
temperature). The class is a prefix token; CFG is optional (class dropout in training, a null class).
The transformer is core's `Transformer` (bidirectional, learned positions); its vocabulary holds the
codebook ids plus one [MASK] id, which is never predicted.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.core.nn import Transformer, TransformerConfig
from genloom.core.nn.cuda_graphs import GraphCache
from genloom.core.sampling.guidance import apply_guidance
from genloom.core.sampling.logits import SamplingParams
from genloom.core.sampling.masked import MaskedSampler
from genloom.image.errors import ImageInputError
from genloom.image.io import ZooComponent, register_image_family
from genloom.image.models.class_embedding import ClassEmbedding

MASKGIT_FAMILY = "image.maskgit"


def maskgit_transformer_config(
    *, dim: int, n_layers: int, n_heads: int, codebook_size: int, num_tokens: int, **overrides: Any
) -> dict:
    """core TransformerConfig (dict) of a MaskGIT-style bidirectional transformer over codebook + [MASK] ids."""
    settings: dict[str, Any] = dict(
        dim=dim, n_layers=n_layers, n_heads=n_heads, vocab_size=codebook_size + 1, max_seq_len=num_tokens + 1,
        mlp="gelu", mlp_bias=True, norm="layernorm", norm_eps=1e-6, fused_qkv=True, qkv_bias="qkv",
        attn_out_bias=True, mask="bidirectional", learned_pos=True, output_bias=True,
    )  # fmt: skip
    settings.update(overrides)
    return TransformerConfig(**settings).to_dict()


@dataclass
class MaskGITConfig:
    transformer: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 10
    grid: tuple[int, int] = (8, 8)
    class_dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "grid": list(self.grid)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskGITConfig:
        data = {k: v for k, v in data.items() if k != "family"}
        data["grid"] = tuple(data["grid"])
        return cls(**data)


class MaskGIT(ZooComponent, nn.Module):
    """Class-conditional masked token model; token layout: [class] then the raster-ordered grid."""

    family = MASKGIT_FAMILY
    config_class = MaskGITConfig

    def __init__(self, config: MaskGITConfig) -> None:
        super().__init__()
        self.config = config
        tcfg = TransformerConfig.from_dict(dict(config.transformer))
        self.transformer = Transformer(tcfg)
        self.cls_embedding = ClassEmbedding(config.num_classes, tcfg.dim, dropout=config.class_dropout)
        self.codebook_size = tcfg.vocab_size - 1
        self.mask_token_id = self.codebook_size
        self._graphs: dict[float, GraphCache] = {}  # the GPU fast path: captured passes per CFG scale

    def _pass_graphs(self, cfg_scale: float) -> GraphCache:
        """The captured passes of one CFG scale, checked once per generation against moved memory."""
        if cfg_scale not in self._graphs:
            fn = (
                self._logits
                if cfg_scale == 1.0
                else functools.partial(self._guided_logits, cfg_scale=cfg_scale)
            )
            self._graphs[cfg_scale] = GraphCache(fn, watch=self)
        graphs = self._graphs[cfg_scale]
        graphs.refresh()
        return graphs

    @property
    def num_tokens(self) -> int:
        return self.config.grid[0] * self.config.grid[1]

    @property
    def vocab_size(self) -> int:
        return self.codebook_size

    def forward(self, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, h*w, codebook_size) for a grid of ids where `mask_token_id` marks unknown tokens."""
        if tokens.ndim != 2 or tokens.shape[1] != self.num_tokens:
            raise ImageInputError(f"tokens must be (B, {self.num_tokens}), got {tuple(tokens.shape)}")
        if tokens.min() < 0 or tokens.max() > self.mask_token_id:
            raise ImageInputError(
                f"token ids must lie in [0, {self.mask_token_id}] ({self.mask_token_id} = [MASK])"
            )
        return self._logits(labels, tokens)

    def _logits(self, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The pass itself, with no host-side checks (capturable as a CUDA graph); labels already checked."""
        classes = self.cls_embedding(labels) if self.training else self.cls_embedding.embedding_table(labels)
        x = torch.cat([classes.unsqueeze(1), self.transformer.embed(tokens)], dim=1)
        return self.transformer(embeddings=x)[:, 1:, : self.codebook_size]

    def _guided_logits(self, labels: torch.Tensor, tokens: torch.Tensor, *, cfg_scale: float) -> torch.Tensor:
        """CFG in one doubled batch: `labels` holds the classes then the null classes (2B,), tokens (B, N)."""
        cond, uncond = self._logits(labels, torch.cat([tokens, tokens])).chunk(2)
        return apply_guidance(cond, uncond, cfg_scale)

    def loss(
        self, labels: torch.Tensor, tokens: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Cross-entropy on the masked positions; per row, a cos(pi/2 u) fraction (at least one) is masked."""
        b, n = tokens.shape
        rng_device = generator.device if generator is not None else tokens.device
        ratio = torch.cos(math.pi / 2 * torch.rand(b, generator=generator, device=rng_device)).to(
            tokens.device
        )
        n_masked = (ratio * n).ceil().clamp(1, n)
        scores = torch.rand(b, n, generator=generator, device=rng_device).to(tokens.device)
        ranks = scores.argsort(dim=1).argsort(dim=1)
        masked = ranks < n_masked.unsqueeze(1)
        logits = self(labels, torch.where(masked, torch.full_like(tokens, self.mask_token_id), tokens))
        return F.cross_entropy(logits[masked], tokens[masked])

    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor,
        *,
        steps: int = 8,
        cfg_scale: float = 1.0,
        choice_temperature: float = 4.5,
        schedule: str = "cosine",
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        graphed: bool = False,
    ) -> torch.Tensor:
        """Token grids (B, h*w) decoded from all-[MASK] in `steps` parallel steps. `graphed=True` (the GPU
        fast path) replays each step's fixed-shape pass, CFG included, from a CUDA graph captured once per
        batch size; the sampler's step between passes is unchanged, so the tokens are the eager ones."""
        if cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
        labels = self.cls_embedding.check(labels)
        null = torch.full_like(labels, self.cls_embedding.null_class)
        both = torch.cat([labels, null])
        graphs = self._pass_graphs(float(cfg_scale)) if graphed else None

        def forward_fn(tokens: torch.Tensor) -> torch.Tensor:
            if graphs is not None:
                return graphs(None, labels if cfg_scale == 1.0 else both, tokens)
            if cfg_scale == 1.0:
                return self(labels, tokens)
            cond, uncond = self(both, torch.cat([tokens, tokens])).chunk(2)
            return apply_guidance(cond, uncond, cfg_scale)

        sampler = MaskedSampler(
            mask_token_id=self.mask_token_id, schedule=schedule, choice_temperature=choice_temperature
        )
        sampler.set_steps(steps)
        start = torch.full((labels.shape[0], self.num_tokens), self.mask_token_id, dtype=torch.long)
        return sampler.sample(
            forward_fn, start.to(self.transformer.output.weight.device), params=sampling, generator=generator
        )


register_image_family(MaskGIT)
