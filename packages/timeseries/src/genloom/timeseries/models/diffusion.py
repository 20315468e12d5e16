"""Diffusion forecaster: a denoiser over the future window, conditioned on the history (the "prompt").

The history is instance-normalised; the future (same statistics) is noised with the cosine schedule of
`genloom.core.sampling` (improved DDPM) and an MLP denoiser, fed the noisy future, an embedding of the
history and of the noise level, predicts the noise. Sampling runs core's `DDIMSampler` on a respaced
schedule (eta = 1: ancestral, DDPM variance; eta = 0: deterministic DDIM) from Gaussian noise, once per
sample path; horizons longer than the trained window are reached by feeding samples back as history.
Only the denoiser network and its history conditioning live here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genloom.core.sampling import DDIMSampler, DDPMSampler
from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.models.tokenized_ar import ProbabilisticForecast, forecast_by_sampling


@dataclass
class DiffusionConfig:
    context_len: int = 96
    pred_len: int = 24
    hidden: int = 256
    n_layers: int = 3
    n_steps: int = 100  # diffusion steps of the training schedule
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


#: Predicted x0 (in units of the history's std) is clipped to this range at every sampling step.
X0_CLIP = 10.0


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class ResidualMLPBlock(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.net = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(self.norm(x))


class DiffusionForecaster(nn.Module):
    def __init__(self, config: DiffusionConfig | None = None):
        super().__init__()
        self.config = c = config or DiffusionConfig()
        self.context_len = c.context_len
        self.history_proj = nn.Linear(c.context_len + 1, c.hidden)  # values + the fraction of observed steps
        self.noisy_proj = nn.Linear(c.pred_len, c.hidden)
        self.time_proj = nn.Sequential(
            nn.Linear(c.hidden, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.hidden)
        )
        self.blocks = nn.ModuleList([ResidualMLPBlock(c.hidden, c.dropout) for _ in range(c.n_layers)])
        self.out = nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, c.pred_len))
        # the training schedule (q(x_t | x_0) and the regression target); sampling respaces it
        self.diffusion = DDPMSampler(num_train_steps=c.n_steps, beta_schedule="cosine", clip_sample=X0_CLIP)

    def config_dict(self) -> dict:
        return {"family": "timeseries.diffusion", **self.config.to_dict()}

    @classmethod
    def from_config_dict(cls, config: dict) -> DiffusionForecaster:
        return cls(DiffusionConfig(**{k: v for k, v in config.items() if k != "family"}))

    def _prompt(
        self, history: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-pad/crop the history to context_len; normalise by its observed mean/std."""
        history = history[:, -self.context_len :]
        mask = torch.ones_like(history, dtype=torch.bool) if mask is None else mask[:, -self.context_len :]
        pad = self.context_len - history.shape[1]
        if pad > 0:
            history = F.pad(history, (pad, 0))
            mask = F.pad(mask, (pad, 0), value=False)
        w = mask.float()
        n = w.sum(-1, keepdim=True).clamp_min(1.0)
        loc = (history * w).sum(-1, keepdim=True) / n
        scale = torch.sqrt((((history - loc) * w) ** 2).sum(-1, keepdim=True) / n).clamp_min(1e-5)
        normed = ((history - loc) / scale) * w
        features = torch.cat([normed, n / self.context_len], dim=-1)
        return features, loc, scale

    def denoise(self, noisy: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Predicted noise for a noisy normalised future [B, pred_len] at steps t [B]."""
        h = self.noisy_proj(noisy) + self.history_proj(prompt)
        h = h + self.time_proj(timestep_embedding(t, self.config.hidden))
        for block in self.blocks:
            h = block(h)
        return self.out(h)

    def compile_denoiser(self, *, mode: str = "reduce-overhead") -> None:
        """Sample through a `torch.compile`d denoiser (CUDA graphs with the default mode on a GPU); the
        sampler loop and its random draws stay eager, so a seeded chain draws the same noise as before.
        Each output is cloned: a CUDA-graph replay overwrites the previous one."""
        compiled = torch.compile(
            DiffusionForecaster.denoise.__get__(self), mode=mode, fullgraph=True, dynamic=False
        )

        def compiled_denoise(noisy: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
            return compiled(noisy, t, prompt).clone()

        self.denoise = compiled_denoise

    def training_loss(
        self, history: torch.Tensor, future: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Noise-prediction MSE at uniformly drawn steps; future [B, pred_len] in the history's units."""
        prompt, loc, scale = self._prompt(history, mask)
        x0 = ((future - loc) / scale).clamp(-X0_CLIP, X0_CLIP)
        t = torch.randint(0, self.config.n_steps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        noisy = self.diffusion.add_noise(x0, noise, t)
        return F.mse_loss(self.denoise(noisy, t, prompt), self.diffusion.training_target(x0, noise, t))

    def pretrain_loss(self, values: torch.Tensor, mask: torch.Tensor, pred_len: int) -> torch.Tensor:
        """Loss on mixed-data windows: history = all but the last `pred_len` steps (masked padding)."""
        if pred_len != self.config.pred_len:
            raise SeriesInputError(
                f"windows end in {pred_len} target steps, the model predicts {self.config.pred_len}"
            )
        return self.training_loss(values[:, :-pred_len], values[:, -pred_len:], mask[:, :-pred_len])

    @torch.no_grad()
    def _sample_window(
        self,
        history: torch.Tensor,
        generator: torch.Generator | None,
        n_steps: int | None,
        eta: float,
    ) -> torch.Tensor:
        """One DDIM chain over `n_steps` respaced steps of the training schedule: [B, pred_len]."""
        prompt, loc, scale = self._prompt(history, None)
        sampler = DDIMSampler(
            num_train_steps=self.config.n_steps, beta_schedule="cosine", clip_sample=X0_CLIP
        )
        sampler.set_steps(min(n_steps or self.config.n_steps, self.config.n_steps))
        noise = torch.randn(
            history.shape[0], self.config.pred_len, generator=generator, device=history.device
        )
        x = sampler.sample(lambda x_t, t: self.denoise(x_t, t, prompt), noise, generator=generator, eta=eta)
        return x * scale + loc

    @torch.no_grad()
    def sample(
        self,
        context: torch.Tensor,
        horizon: int,
        *,
        num_samples: int = 20,
        n_steps: int | None = 50,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """[B, L] -> [num_samples, B, horizon]; windows of pred_len chained autoregressively. `n_steps`
        sampling steps (None = the whole training schedule); `eta` 1 = ancestral, 0 = deterministic DDIM."""
        if context.ndim != 2 or not torch.isfinite(context).all():
            raise SeriesInputError("context must be a finite [batch, time] tensor (fill NaN values first)")
        if horizon <= 0:
            raise SeriesInputError(f"horizon must be positive, got {horizon}")
        if n_steps is not None and n_steps < 1:
            raise SeriesInputError(f"n_steps must be >= 1 (or None for the whole schedule), got {n_steps}")
        self.eval()
        B = context.shape[0]
        history = context.float().repeat_interleave(num_samples, 0)
        outputs = []
        for _ in range(math.ceil(horizon / self.config.pred_len)):
            window = self._sample_window(history, generator, n_steps, eta)
            outputs.append(window)
            history = torch.cat([history, window], dim=1)[:, -self.context_len :]
        paths = torch.cat(outputs, dim=1)[:, :horizon]
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
