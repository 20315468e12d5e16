"""Raster-order autoregressive image model (LlamaGen): class prefix token(s) + VQ tokens, 2D RoPE, CFG.

The transformer is core's `Transformer` configured as LlamaGen's Llama blocks (RMSNorm, SwiGLU, fused
bias-free qkv, interleaved 2D RoPE whose class-prefix rows are zero so the class token's q and k vanish).
Token layout: `cls_token_num` class embeddings, then the h x w grid of token ids in row-major order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.core.nn import Transformer, TransformerConfig
from genloom.core.sampling.autoregressive import generate
from genloom.core.sampling.compiled import CompiledDecoder
from genloom.core.sampling.guidance import apply_guidance
from genloom.core.sampling.logits import SamplingParams
from genloom.image.errors import ImageInputError
from genloom.image.io import ZooComponent, register_image_family
from genloom.image.models.class_embedding import ClassEmbedding
from genloom.image.models.class_prefix import ClassPrefixLM

RASTER_AR_FAMILY = "image.raster_ar"


def llamagen_transformer_config(
    *,
    dim: int,
    n_layers: int,
    n_heads: int,
    vocab_size: int,
    grid: tuple[int, int],
    cls_token_num: int = 1,
    **overrides: Any,
) -> TransformerConfig:
    """core TransformerConfig of LlamaGen's GPT (`autoregressive/models/gpt.py`)."""
    settings: dict[str, Any] = dict(
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        vocab_size=vocab_size,
        max_seq_len=cls_token_num + grid[0] * grid[1],
        mlp="swiglu",
        mlp_multiple_of=256,
        norm="rmsnorm",
        norm_eps=1e-5,
        fused_qkv=True,
        mask="causal",
        rope="2d",
        rope_layout="interleaved",
        rope_grid=list(grid),
        rope_prefix=cls_token_num,
        rope_prefix_rotation="zero",
    )
    settings.update(overrides)
    return TransformerConfig(**settings)


@dataclass
class RasterARConfig:
    transformer: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 10
    cls_token_num: int = 1
    grid: tuple[int, int] = (16, 16)
    class_dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return {
            "transformer": dict(self.transformer),
            "num_classes": self.num_classes,
            "cls_token_num": self.cls_token_num,
            "grid": list(self.grid),
            "class_dropout": self.class_dropout,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RasterARConfig:
        data = {k: v for k, v in data.items() if k != "family"}
        data["grid"] = tuple(data["grid"])
        return cls(**data)


class RasterAR(ZooComponent, nn.Module):
    """Class-conditional next-token model over a raster-ordered token grid."""

    family = RASTER_AR_FAMILY
    config_class = RasterARConfig

    def __init__(self, config: RasterARConfig) -> None:
        super().__init__()
        self.config = config
        tcfg = (
            TransformerConfig.from_dict(config.transformer)
            if isinstance(config.transformer, dict)
            else config.transformer
        )
        self.transformer = Transformer(tcfg)
        self.cls_embedding = ClassEmbedding(config.num_classes, tcfg.dim, dropout=config.class_dropout)
        self._decoders: dict[tuple, CompiledDecoder] = {}  # compiled fast paths, one per sampling setup

    @property
    def num_tokens(self) -> int:
        return self.config.grid[0] * self.config.grid[1]

    @property
    def vocab_size(self) -> int:
        return self.transformer.config.vocab_size

    def _class_prefix(self, labels: torch.Tensor) -> torch.Tensor:
        # LlamaGen embeds one vector per class and uses it for every prefix slot it needs.
        return self.cls_embedding(labels).unsqueeze(1).expand(-1, self.config.cls_token_num, -1)

    def _check_tokens(self, tokens: torch.Tensor, max_len: int) -> None:
        if tokens.ndim != 2 or tokens.shape[1] > max_len or tokens.dtype not in (torch.int64, torch.int32):
            raise ImageInputError(
                f"tokens must be integer ids (B, <= {max_len}), got {tokens.dtype} {tuple(tokens.shape)}"
            )
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ImageInputError(
                f"token ids must lie in [0, {self.vocab_size}), got {tokens.min().item()}..{tokens.max().item()}"
            )

    def forward(self, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, cls + T, V) for the prefix + `tokens` (B, T), T <= grid size - 1.

        Position cls_token_num - 1 + i predicts token i (LlamaGen's layout).
        """
        self._check_tokens(tokens, self.num_tokens - 1)
        x = torch.cat([self._class_prefix(labels), self.transformer.embed(tokens)], dim=1)
        return self.transformer(embeddings=x)

    def loss(self, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy over all grid tokens (B, h*w) given the class."""
        if tokens.shape[1] != self.num_tokens:
            raise ImageInputError(f"expected {self.num_tokens} tokens per image, got {tokens.shape[1]}")
        logits = self(labels, tokens[:, :-1])[:, self.config.cls_token_num - 1 :]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))

    # ------------------------------------------------------------------ cached decoding

    @torch.no_grad()
    def decode_logits(
        self, labels: torch.Tensor, tokens: torch.Tensor, *, cfg_scale: float = 1.0
    ) -> torch.Tensor:
        """Logits of every cached decoding step when fed the given tokens (B, h*w): (B, h*w, V) (guided when
        cfg_scale != 1; the raw (2B, ...) conditional/unconditional logits are not returned)."""
        self._check_tokens(tokens, self.num_tokens)
        lm = ClassPrefixLM(self)
        labels = self.cls_embedding.check(labels)
        prompt = lm.class_prompt(labels)
        if cfg_scale != 1.0:
            prompt = torch.cat(
                [prompt, lm.class_prompt(torch.full_like(labels, self.cls_embedding.null_class))]
            )
        n, k = prompt.shape
        lm.setup_cache(n, k + self.num_tokens)
        try:
            out = [self._guide(lm(prompt, input_pos=torch.arange(k))[:, -1], cfg_scale)]
            for t in range(tokens.shape[1] - 1):
                token = tokens[:, t : t + 1].repeat(n // tokens.shape[0], 1)
                out.append(self._guide(lm(token, input_pos=torch.tensor([k + t]))[:, -1], cfg_scale))
        finally:
            lm.remove_cache()
        return torch.stack(out, dim=1)

    @staticmethod
    def _guide(logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        if cfg_scale == 1.0:
            return logits
        cond, uncond = logits.chunk(2)
        return apply_guidance(cond, uncond, cfg_scale)

    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor,
        *,
        cfg_scale: float = 1.0,
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        cfg_interval: int = -1,
        compiled: bool | str = False,
    ) -> torch.Tensor:
        """Sample token grids (B, h*w) for the given classes with CFG (cfg_scale 1 = off) and top-k / top-p.

        Core's AR loop (`genloom.core.sampling.generate`: static KV cache, CFG on the logits before
        temperature and filtering, as LlamaGen does) drives the model through `ClassPrefixLM`. LlamaGen's
        `cfg_interval` c >= 0 stops guiding after token c + 1 (-1: guide every token). `compiled=True` runs
        core's `CompiledDecoder` instead (the whole step one CUDA graph on a GPU; the same tokens for the
        same seed), compiled on first use per sampling setup and batch bucket; a string names the
        `torch.compile` backend ("eager" traces without code generation, for checks on any machine).
        """
        if cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
        if isinstance(cfg_interval, bool) or not isinstance(cfg_interval, int) or cfg_interval < -1:
            raise ValueError(
                f"cfg_interval must be an int >= -1 (-1: guide every token), got {cfg_interval!r}"
            )
        lm = ClassPrefixLM(self)
        labels = self.cls_embedding.check(labels)
        guided = cfg_scale != 1.0
        uncond = lm.class_prompt(torch.full_like(labels, self.cls_embedding.null_class)) if guided else None
        guided_steps = cfg_interval + 2 if guided and cfg_interval >= 0 else None
        sampling = sampling or SamplingParams()
        if compiled:  # the static cache stays allocated: its buffers are baked into the captured graphs
            backend = "inductor" if compiled is True else str(compiled)
            return self._decoder(lm, sampling, cfg_scale if guided else None, backend).generate(
                lm.class_prompt(labels),
                self.num_tokens,
                uncond_prompt=uncond,
                generator=generator,
                guided_steps=guided_steps,
            )
        try:
            return generate(
                lm,
                lm.class_prompt(labels),
                self.num_tokens,
                params=sampling,
                cfg_scale=cfg_scale if guided else None,
                uncond_prompt=uncond,
                generator=generator,
                guided_steps=guided_steps,
            )
        finally:
            lm.remove_cache()

    def _decoder(
        self, lm: ClassPrefixLM, sampling: SamplingParams, cfg_scale: float | None, backend: str
    ) -> CompiledDecoder:
        s = sampling
        key = (s.temperature, s.top_k, s.top_p, s.min_p, s.typical_p, cfg_scale, backend)
        if key not in self._decoders:
            self._decoders[key] = CompiledDecoder(lm, params=sampling, cfg_scale=cfg_scale, backend=backend)
        decoder = self._decoders[key]
        decoder.model = lm  # the adapter is stateless; the compiled step calls the transformer itself
        return decoder


register_image_family(RasterAR)
