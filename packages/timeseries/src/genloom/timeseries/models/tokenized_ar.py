"""Tokenised autoregressive forecaster ("decoding-based regression", Chronos-style): scale the context,
bin values into tokens, model the token sequence with a causal transformer, sample future paths token by
token and turn the paths into quantiles. Univariate; a multivariate input is forecast per channel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.models.decoder import DecoderConfig, TokenDecoder
from genloom.timeseries.tokenizer import PAD_ID, BinTokenizerConfig, ScaleBinTokenizer


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


class TokenizedARForecaster(nn.Module):
    def __init__(
        self,
        decoder: DecoderConfig | None = None,
        tokenizer: BinTokenizerConfig | None = None,
        *,
        context_len: int = 96,
    ):
        super().__init__()
        self.tokenizer = ScaleBinTokenizer(tokenizer)
        decoder = decoder or DecoderConfig()
        if decoder.vocab_size != self.tokenizer.vocab_size:
            decoder = DecoderConfig(**{**decoder.to_dict(), "vocab_size": self.tokenizer.vocab_size})
        if context_len >= decoder.max_len:
            raise SeriesInputError(
                f"context_len {context_len} must be below the decoder max_len {decoder.max_len}"
            )
        self.decoder = TokenDecoder(decoder)
        self.context_len = context_len

    def config_dict(self) -> dict:
        return {
            "family": "timeseries.tokenized_ar",
            "decoder": self.decoder.config.to_dict(),
            "tokenizer": self.tokenizer.config.to_dict(),
            "context_len": self.context_len,
        }

    @classmethod
    def from_config_dict(cls, config: dict) -> TokenizedARForecaster:
        return cls(
            DecoderConfig(**config["decoder"]),
            BinTokenizerConfig(**config["tokenizer"]),
            context_len=int(config["context_len"]),
        )

    def training_loss(self, values: torch.Tensor, mask: torch.Tensor, context_steps: int) -> torch.Tensor:
        """Next-token cross-entropy over windows [B, T] (mask False = left padding); the scale comes from
        the first `context_steps` steps only, as at inference."""
        loc, scale = self.tokenizer.fit_scale(values[:, :context_steps], mask[:, :context_steps])
        ids = self.tokenizer.encode(values, loc, scale, mask)
        logits = self.decoder(ids[:, :-1], mask[:, :-1])
        target = torch.where(mask[:, 1:], ids[:, 1:], torch.full_like(ids[:, 1:], -100))
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
        max_len = self.decoder.config.max_len
        generated = []
        logits, cache, position = None, None, 0
        for _ in range(horizon):
            if cache is None or position >= max_len:
                # (re-)prefill: keep the most recent tokens, leaving room for a chunk of new ones
                keep = ids[:, -self.context_len :]
                logits, cache = self.decoder.prefill(keep)
                position = keep.shape[1]
            logits = logits.float()
            logits[:, PAD_ID] = -float("inf")
            if temperature <= 0:
                next_id = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k > 0:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, -float("inf"))
                next_id = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            generated.append(next_id)
            ids = torch.cat([ids, next_id], dim=1)
            if position < max_len:
                logits = self.decoder.step(next_id, position, cache)
            position += 1
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
        arr = np.asarray(context, dtype=np.float64)
        arr = arr[None] if arr.ndim == 1 else arr
        gen = torch.Generator().manual_seed(seed)
        device = next(self.parameters()).device
        samples = self.sample(
            torch.from_numpy(arr.copy()).float().to(device),
            horizon,
            num_samples=num_samples,
            generator=gen if device.type == "cpu" else None,
            **kwargs,
        )
        return forecast_from_samples(samples.double().cpu().numpy(), list(levels))
