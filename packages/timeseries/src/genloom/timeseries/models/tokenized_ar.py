"""Tokenised autoregressive forecaster ("decoding-based regression", Chronos-style): scale the context,
bin values into tokens, model the token sequence with a causal transformer, sample future paths token by
token and turn the paths into quantiles. Univariate; a multivariate input is forecast per channel.

The transformer is `genloom.core.nn.Transformer` (GPT-2 style: pre-LayerNorm, biased fused qkv, exact-GELU
MLP, learned absolute positions, bias-free head) with its static KV cache; sampling draws from the
logits with `genloom.core.sampling.generate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genloom.core.errors import ConfigError
from genloom.core.nn import Transformer, TransformerConfig
from genloom.core.sampling import SamplingParams, generate
from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.tokenizer import PAD_ID, BinTokenizerConfig, ScaleBinTokenizer

FAMILY = "timeseries.tokenized_ar"


@dataclass
class ProbabilisticForecast:
    """samples [S, B, H]; median / mean [B, H]; quantiles [Q, B, H] at `levels` (original units)."""

    samples: np.ndarray
    levels: list[float]
    quantiles: np.ndarray

    @property
    def median(self) -> np.ndarray:
        return np.median(self.samples, axis=0)

    @property
    def mean(self) -> np.ndarray:
        return self.samples.mean(axis=0)


def forecast_from_samples(samples: np.ndarray, levels: list[float]) -> ProbabilisticForecast:
    return ProbabilisticForecast(
        samples=samples, levels=list(levels), quantiles=np.quantile(samples, list(levels), axis=0)
    )


def forecast_by_sampling(
    model: nn.Module,
    context: np.ndarray,
    horizon: int,
    *,
    levels: tuple[float, ...],
    num_samples: int,
    seed: int,
    **sample_kwargs,
) -> ProbabilisticForecast:
    """The numpy `forecast` of a sampling forecaster: context [B, L] (or [L]) -> quantiles of
    `model.sample(context, horizon, num_samples=..., generator=..., **sample_kwargs)` paths [S, B, H].
    Seeded by `seed` on CPU; on an accelerator the global generator is used."""
    arr = np.asarray(context, dtype=np.float64)
    arr = arr[None] if arr.ndim == 1 else arr
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    samples = model.sample(
        torch.from_numpy(arr.copy()).float().to(device),
        horizon,
        num_samples=num_samples,
        generator=gen if device.type == "cpu" else None,
        **sample_kwargs,
    )
    return forecast_from_samples(samples.double().cpu().numpy(), list(levels))


def forecaster_transformer_config(
    *,
    dim: int = 128,
    n_layers: int = 4,
    n_heads: int = 4,
    mlp_hidden_dim: int | None = None,
    max_seq_len: int = 256,
    dropout: float = 0.1,
    vocab_size: int = 1025,
) -> TransformerConfig:
    """The core `TransformerConfig` of a tokenised AR forecaster: a GPT-2 style decoder (pre-LayerNorm,
    biased fused qkv and projections, exact-GELU MLP of `mlp_hidden_dim` (default 4 * dim), learned
    absolute positions, bias-free vocab head); `dropout` applies to attention weights and residuals."""
    return TransformerConfig(
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        vocab_size=vocab_size,
        max_seq_len=max_seq_len,
        mlp="gelu",
        mlp_hidden_dim=4 * dim if mlp_hidden_dim is None else mlp_hidden_dim,
        mlp_bias=True,
        norm="layernorm",
        qkv_bias="qkv",
        attn_out_bias=True,
        learned_pos=True,
        mask="causal",
        dropout=dropout,
        attn_dropout=dropout,
    )


class _NoPaddingLM:
    """The decoder as core `generate` sees it, with the padding bin never sampled. A prefill returns the
    logits of its last position only (all `generate` reads), and every cache is allocated at the
    transformer's full length, so one static cache (and one compiled decode step) serves every segment."""

    def __init__(self, decoder: Transformer):
        self.decoder = decoder
        self._pad_index: torch.Tensor | None = None

    def setup_cache(self, batch_size: int, max_seq_len: int) -> None:
        dtype = None
        if self.decoder.output.weight.is_cuda and torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")  # a bf16 cache under bf16 autocast
        self.decoder.setup_cache(batch_size, max(max_seq_len, self.decoder.config.max_seq_len), dtype=dtype)

    def truncate_cache(self, length: int) -> None:
        self.decoder.truncate_cache(length)

    def __call__(self, tokens: torch.Tensor, *, input_pos: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] == 1:
            logits = self.decoder(tokens, input_pos=input_pos)  # the compiled step, when there is one
        else:
            hidden = self.decoder.features(tokens, input_pos=input_pos)[:, -1:]
            logits = self.decoder.output(hidden).float()
        if self._pad_index is None or self._pad_index.device != logits.device:
            self._pad_index = torch.tensor([PAD_ID], device=logits.device)
        return logits.index_fill(-1, self._pad_index, float("-inf"))


class TokenizedARForecaster(nn.Module):
    """Scale-and-bin tokenizer + `genloom.core.nn.Transformer` over the token ids (see the module doc)."""

    def __init__(
        self,
        transformer: TransformerConfig | None = None,
        tokenizer: BinTokenizerConfig | None = None,
        *,
        context_len: int = 96,
    ):
        super().__init__()
        self.tokenizer = ScaleBinTokenizer(tokenizer)
        transformer = transformer or forecaster_transformer_config()
        if transformer.vocab_size != self.tokenizer.vocab_size:
            transformer = transformer.replace(vocab_size=self.tokenizer.vocab_size)
        if not transformer.learned_pos and transformer.rope == "none":
            raise ConfigError("the forecaster's transformer needs positions: learned_pos=True or a 1d RoPE")
        if transformer.mask != "causal":
            raise ConfigError(f"the forecaster's transformer must be causal, got mask={transformer.mask!r}")
        if context_len >= transformer.max_seq_len:
            raise SeriesInputError(
                f"context_len {context_len} must be below the transformer max_seq_len {transformer.max_seq_len}"
            )
        self.decoder = Transformer(transformer)
        self.context_len = context_len
        self._keep_cache = False

    def compile_decode(self, *, mode: str = "reduce-overhead") -> None:
        """Run one-token decode steps through core's compiled step (`torch.compile`, CUDA graphs with the
        default mode on a GPU). The KV cache then stays allocated between `sample` calls, so the captured
        graphs stay valid: use this model for inference only afterwards."""
        self.decoder.compile_decode(mode=mode)
        self._keep_cache = True

    @property
    def max_len(self) -> int:
        """Most token positions the transformer has (context plus generated tokens before a re-prefill)."""
        return self.decoder.config.max_seq_len

    def config_dict(self) -> dict:
        return {
            "family": FAMILY,
            "transformer": self.decoder.config.to_dict(),
            "tokenizer": self.tokenizer.config.to_dict(),
            "context_len": self.context_len,
        }

    @classmethod
    def from_config_dict(cls, config: dict) -> TokenizedARForecaster:
        """Inverse of `config_dict` (the "family" key, if present, is ignored)."""
        missing = sorted({"transformer", "tokenizer", "context_len"} - set(config))
        if missing:
            raise ConfigError(f"tokenised AR config lacks {missing}; got keys {sorted(config)}")
        return cls(
            TransformerConfig.from_dict(dict(config["transformer"])),
            BinTokenizerConfig(**config["tokenizer"]),
            context_len=int(config["context_len"]),
        )

    def training_loss(
        self, values: torch.Tensor, mask: torch.Tensor | None, context_steps: int
    ) -> torch.Tensor:
        """Next-token cross-entropy over windows [B, T] (mask False = left padding; None = no padding,
        which spares a host sync); the scale comes from the first `context_steps` steps only, as at
        inference."""
        context_mask = None if mask is None else mask[:, :context_steps]
        loc, scale = self.tokenizer.fit_scale(values[:, :context_steps], context_mask)
        ids = self.tokenizer.encode(values, loc, scale, mask)
        key_mask = None if mask is None or bool(mask.all()) else mask[:, :-1]
        logits = self.decoder(ids[:, :-1], key_padding_mask=key_mask)
        target = ids[:, 1:] if mask is None else torch.where(mask[:, 1:], ids[:, 1:], -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)

    def pretrain_loss(self, values: torch.Tensor, mask: torch.Tensor, pred_len: int) -> torch.Tensor:
        """Loss on mixed-data windows whose last `pred_len` steps are the forecast target."""
        return self.training_loss(values, mask, context_steps=values.shape[1] - pred_len)

    @torch.no_grad()
    def sample(
        self,
        context: torch.Tensor,
        horizon: int,
        *,
        num_samples: int = 20,
        temperature: float = 1.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample paths: context [B, L] (no NaN) -> [num_samples, B, horizon] in the context's units."""
        if context.ndim != 2:
            raise SeriesInputError(f"context must be [batch, time], got shape {tuple(context.shape)}")
        if not torch.isfinite(context).all():
            raise SeriesInputError("context holds NaN or infinite values; fill them first")
        if horizon <= 0:
            raise SeriesInputError(f"horizon must be positive, got {horizon}")
        self.eval()
        context = context[:, -self.context_len :].float()
        B, L = context.shape
        loc, scale = self.tokenizer.fit_scale(context)
        ids = self.tokenizer.encode(context, loc, scale).repeat_interleave(num_samples, 0)
        loc_s, scale_s = loc.repeat_interleave(num_samples, 0), scale.repeat_interleave(num_samples, 0)
        params = SamplingParams(temperature=max(0.0, temperature), top_k=top_k if top_k > 0 else None)
        # core's cached AR loop, run in segments: when the cache is full, re-prefill from the most recent
        # context_len tokens (the model was trained on windows of at most max_len tokens)
        lm = _NoPaddingLM(self.decoder)
        generated, remaining = [], horizon
        try:
            while remaining > 0:
                keep = ids[:, -self.context_len :]
                n_new = min(remaining, max(1, self.max_len - keep.shape[1]))
                new_ids = generate(lm, keep, n_new, params=params, generator=generator)
                generated.append(new_ids)
                ids = torch.cat([ids, new_ids], dim=1)
                remaining -= n_new
        finally:
            if not self._keep_cache:
                self.decoder.remove_cache()  # back to uncached (training / teacher-forced) forwards
        paths = self.tokenizer.decode(torch.cat(generated, 1), loc_s, scale_s)
        return paths.view(B, num_samples, horizon).transpose(0, 1)

    def forecast(
        self,
        context: np.ndarray,
        horizon: int,
        *,
        levels: tuple[float, ...] = (0.1, 0.5, 0.9),
        num_samples: int = 20,
        seed: int = 0,
        **kwargs,
    ) -> ProbabilisticForecast:
        """numpy [B, L] (or [L]) -> quantile forecast in original units."""
        return forecast_by_sampling(
            self, context, horizon, levels=levels, num_samples=num_samples, seed=seed, **kwargs
        )
