"""MAR's per-token diffusion head: a small MLP with AdaLN denoises one continuous token given its condition.

`DiffusionMLP` matches MAR's `SimpleMLPAdaLN` (models/diffloss.py): sinusoidal timestep embedding + MLP,
condition projection, residual blocks modulated by (timestep + condition), an adaptive final layer whose
output is [predicted noise, learned-variance values]. `DiffusionHead` wraps it with core's cosine-schedule
Gaussian diffusion: hybrid training loss (MSE + variational bound) and respaced DDPM sampling with CFG.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from genloom.core.sampling.diffusion import DDPMSampler


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[cos, sin] sinusoidal features of (possibly fractional) timesteps t (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


class ModulatedResBlock(nn.Module):
    """x + gate * MLP(LN(x) * (1 + scale) + shift), (shift, scale, gate) from the condition y."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class ModulatedOutput(nn.Module):
    """Non-affine LN, (shift, scale) modulation, then a linear projection to the output channels."""

    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_channels)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(y).chunk(2, dim=-1)
        return self.linear(self.norm(x) * (1 + scale) + shift)


class DiffusionMLP(nn.Module):
    """eps-and-variance network for one token: (x_t (N, C), t (N,), condition (N, cond_dim)) -> (N, 2C)."""

    def __init__(
        self, *, channels: int, cond_dim: int, width: int = 1024, depth: int = 3, frequency_dim: int = 256
    ) -> None:
        super().__init__()
        self.channels = channels
        self.frequency_dim = frequency_dim
        self.time_embed = nn.Sequential(nn.Linear(frequency_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(channels, width)
        self.blocks = nn.ModuleList(ModulatedResBlock(width) for _ in range(depth))
        self.final = ModulatedOutput(width, 2 * channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """MAR's SimpleMLPAdaLN initialisation: xavier-uniform linears with zero biases, N(0, 0.02) timestep
        MLP, zeroed AdaLN modulations (every block starts as the identity) and a zeroed output layer (the
        head starts predicting zero noise and the middle of the learned variance range)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.time_embed[0].weight, std=0.02)
        nn.init.normal_(self.time_embed[2].weight, std=0.02)
        for layer in [block.modulation[-1] for block in self.blocks] + [
            self.final.modulation[-1],
            self.final.linear,
        ]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        y = self.time_embed(timestep_embedding(t, self.frequency_dim)) + self.cond_embed(c)
        h = self.input_proj(x)
        for block in self.blocks:
            h = block(h, y)
        return self.final(h, y)

    def forward_with_cfg(
        self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, cfg_scale: float
    ) -> torch.Tensor:
        """Rows [:N/2] conditional, [N/2:] unconditional (both fed the first half of x, as MAR does); the noise
        (or v) prediction is guided and duplicated, the variance values are left unguided."""
        half = x[: x.shape[0] // 2]
        out = self(torch.cat([half, half]), t, c)
        eps, rest = out[:, : self.channels], out[:, self.channels :]
        cond_eps, uncond_eps = eps.chunk(2)
        guided = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([guided, guided]), rest], dim=1)


class DiffusionHead(nn.Module):
    """The network plus its schedules: 1000-step cosine training diffusion, respaced sampling diffusion.

    `prediction_type` "epsilon" is MAR's (and what its checkpoints hold). "v" (Salimans & Ho 2022) suits a
    small, briefly trained head: with epsilon the clean token is (x_t - sqrt(1 - a) eps) / sqrt(a), so at the
    noisiest steps (a near 1e-9 at t = 999) a tiny noise error becomes a huge token error (the compact shapes
    head predicted clean tokens worse than zero at t >= 800); with v it is sqrt(a) x_t - sqrt(1 - a) v, no
    amplification. CFG mixes whichever the network predicts (both are affine in eps for a given x_t)."""

    def __init__(
        self,
        *,
        channels: int,
        cond_dim: int,
        width: int = 1024,
        depth: int = 3,
        sampling_steps: int = 100,
        prediction_type: str = "epsilon",
    ) -> None:
        super().__init__()
        if prediction_type not in ("epsilon", "v"):
            raise ValueError(f"prediction_type must be 'epsilon' (MAR) or 'v', got {prediction_type!r}")
        self.net = DiffusionMLP(channels=channels, cond_dim=cond_dim, width=width, depth=depth)
        self.channels = channels
        self.prediction_type = prediction_type
        kw = dict(
            num_train_steps=1000, beta_schedule="cosine", variance_type="learned_range",
            prediction_type=prediction_type,
        )  # fmt: skip
        self.train_diffusion = DDPMSampler(**kw)
        self.sampler = DDPMSampler(**kw)
        self.sampler.set_steps(sampling_steps)

    def loss(
        self, target: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hybrid diffusion loss of tokens `target` (N, C) given conditions (N, cond_dim), averaged over `mask`."""
        t = torch.randint(0, self.train_diffusion.num_train_steps, (target.shape[0],), device=target.device)
        noise = torch.randn_like(target)
        x_t = self.train_diffusion.add_noise(target, noise, t)
        losses = self.train_diffusion.training_losses(self.net(x_t, t, cond), target, noise, t)["loss"]
        if mask is None:
            return losses.mean()
        return (losses * mask).sum() / mask.sum().clamp_min(1)

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        *,
        cfg_scale: float = 1.0,
        temperature: float = 1.0,
        clip_x0: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Tokens (N, C) for conditions (N, cond_dim); with CFG the rows are [cond; uncond] and both halves
        share one noise draw (returned duplicated, as MAR does). `clip_x0` clamps each step's predicted clean
        token to [-clip_x0, clip_x0] (guided-diffusion's clip_denoised; MAR's default is off): a small, briefly
        trained head whose noise prediction is slightly off at the noisiest steps otherwise diverges."""
        if clip_x0 is not None and clip_x0 <= 0:
            raise ValueError(f"clip_x0 must be > 0 or None, got {clip_x0}")
        self.sampler.clip_sample = clip_x0
        n = cond.shape[0]
        if cfg_scale != 1.0:
            noise = torch.randn(n // 2, self.channels, generator=generator, device=cond.device)
            noise = torch.cat([noise, noise])

            def model_fn(x, t):  # noqa: ANN001, ANN202
                return self.net.forward_with_cfg(x, t, cond, cfg_scale)
        else:
            noise = torch.randn(n, self.channels, generator=generator, device=cond.device)

            def model_fn(x, t):  # noqa: ANN001, ANN202
                return self.net(x, t, cond)

        return self.sampler.sample(model_fn, noise, generator=generator, temperature=temperature)
