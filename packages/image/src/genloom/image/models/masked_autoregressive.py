"""MAR (Li et al. 2024, "Autoregressive Image Generation without Vector Quantization").

Continuous tokens (patches of a KL autoencoder's latent) are generated in a random order, several per step:
a bidirectional MAE-style encoder sees the known tokens plus `buffer_size` class-embedding slots, a decoder
fills masked positions with a mask token, and a small diffusion MLP samples each predicted token from its
decoder output. CFG runs the head on [class; fake-latent] conditions with a linear schedule over steps.
The encoder / decoder stacks are core `Encoder`s configured as timm ViT blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from genloom.core.nn import Encoder, TransformerConfig
from genloom.image.errors import ImageInputError, UnknownClassError
from genloom.image.io import ZooComponent, register_image_family
from genloom.image.models.diffusion_head import DiffusionHead

MAR_FAMILY = "image.mar"


def vit_config(
    *,
    dim: int,
    depth: int,
    n_heads: int,
    mlp_ratio: float = 4.0,
    norm_eps: float = 1e-6,
    dropout: float = 0.0,
) -> dict:
    """core TransformerConfig (as a dict) of timm ViT blocks: LayerNorm, exact GELU, biased qkv, bidirectional."""
    return TransformerConfig(
        dim=dim, n_layers=depth, n_heads=n_heads, vocab_size=None, mlp="gelu", mlp_ratio=mlp_ratio, mlp_bias=True,
        norm="layernorm", norm_eps=norm_eps, fused_qkv=True, qkv_bias="qkv", attn_out_bias=True, mask="bidirectional",
        dropout=dropout, attn_dropout=dropout,
    ).to_dict()  # fmt: skip


@dataclass
class MARConfig:
    encoder: dict[str, Any] = field(default_factory=lambda: vit_config(dim=768, depth=12, n_heads=12))
    decoder: dict[str, Any] = field(default_factory=lambda: vit_config(dim=768, depth=12, n_heads=12))
    num_classes: int = 1000
    token_dim: int = 16  # vae_embed_dim * patch_size ** 2
    vae_channels: int = 16
    patch_size: int = 1
    grid: tuple[int, int] = (16, 16)
    buffer_size: int = 64
    diffusion_width: int = 1024
    diffusion_depth: int = 3
    diffusion_steps: int = 100
    class_dropout: float = 0.1
    mask_ratio_min: float = 0.7
    diffusion_batch_mul: int = 4
    diffusion_prediction: str = "epsilon"  # MAR's; "v" for small, briefly trained heads (DiffusionHead)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["grid"] = list(self.grid)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MARConfig:
        data = {k: v for k, v in data.items() if k != "family"}
        data["grid"] = tuple(data["grid"])
        return cls(**data)


def sample_mask_ratio(
    lo: float,
    *,
    mean: float = 1.0,
    std: float = 0.25,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> float:
    """One draw of MAR's mask ratio: a normal(mean, std) truncated to [lo, 1] (scipy's truncnorm in MAR),
    by inverting the CDF. Clamping a normal draw instead puts half the mass on exactly 1 (nothing known)."""
    rng_device = generator.device if generator is not None else device
    normal = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64), std)
    lo_cdf, hi_cdf = (
        normal.cdf(torch.tensor(lo, dtype=torch.float64)),
        normal.cdf(torch.tensor(1.0, dtype=torch.float64)),
    )
    u = torch.rand(1, generator=generator, device=rng_device).double().cpu()
    return float(normal.icdf(lo_cdf + u * (hi_cdf - lo_cdf)).clamp(lo, 1.0))


def mask_by_order(mask_len: int, orders: torch.Tensor) -> torch.Tensor:
    """Float mask (B, L) with ones at the first `mask_len` positions of each row's order."""
    mask = torch.zeros(orders.shape, device=orders.device)
    return mask.scatter(-1, orders[:, :mask_len], 1.0)


class MaskedAutoregressive(ZooComponent, nn.Module):
    """MAR generator over continuous tokens (B, seq_len, token_dim)."""

    family = MAR_FAMILY
    config_class = MARConfig

    def __init__(self, config: MARConfig) -> None:
        super().__init__()
        self.config = cfg = config
        enc, dec = (
            TransformerConfig.from_dict(dict(cfg.encoder)),
            TransformerConfig.from_dict(dict(cfg.decoder)),
        )
        self.seq_len = cfg.grid[0] * cfg.grid[1]
        total = self.seq_len + cfg.buffer_size
        self.class_emb = nn.Embedding(cfg.num_classes, enc.dim)
        self.fake_latent = nn.Parameter(torch.zeros(1, enc.dim))
        self.z_proj = nn.Linear(cfg.token_dim, enc.dim)
        self.z_proj_ln = nn.LayerNorm(enc.dim, eps=1e-6)
        self.encoder_pos_embed = nn.Parameter(torch.zeros(1, total, enc.dim))
        self.encoder = Encoder(enc)
        self.decoder_embed = nn.Linear(enc.dim, dec.dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec.dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, total, dec.dim))
        self.decoder = Encoder(dec)
        self.diffusion_pos_embed = nn.Parameter(torch.zeros(1, self.seq_len, dec.dim))
        self.head = DiffusionHead(
            channels=cfg.token_dim, cond_dim=dec.dim, width=cfg.diffusion_width, depth=cfg.diffusion_depth,
            sampling_steps=cfg.diffusion_steps, prediction_type=cfg.diffusion_prediction,
        )  # fmt: skip
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """MAR's initialisation: xavier-uniform linears with zero biases, unit LayerNorms, N(0, 0.02) class
        embeddings, learned tokens and position embeddings; the diffusion head keeps its own (zeroed AdaLN
        modulations and output layer). Short trainings of small models depend on it."""
        for name, module in self.named_modules():
            if name.startswith("head"):
                continue
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for p in (
            self.class_emb.weight,
            self.fake_latent,
            self.mask_token,
            self.encoder_pos_embed,
            self.decoder_pos_embed,
            self.diffusion_pos_embed,
        ):
            nn.init.normal_(p, std=0.02)

    # ------------------------------------------------------------------ layout

    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """Latent map (B, C, H, W) -> tokens (B, H/p * W/p, C * p * p) in MAR's (c, p, q) channel order."""
        p, (gh, gw) = self.config.patch_size, self.config.grid
        b, c, h, w = latents.shape
        if (c, h, w) != (self.config.vae_channels, gh * p, gw * p):
            raise ImageInputError(
                f"MAR expects latents (B, {self.config.vae_channels}, {gh * p}, {gw * p}), got {tuple(latents.shape)}"
            )
        x = latents.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, gh * gw, c * p * p)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        p, (gh, gw), c = self.config.patch_size, self.config.grid, self.config.vae_channels
        x = tokens.reshape(tokens.shape[0], gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(tokens.shape[0], c, gh * p, gw * p)

    def class_embedding(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Class embeddings (B, dim); `None` labels give MAR's learned unconditional `fake_latent`."""
        if labels is None:
            return self.fake_latent.expand(batch, -1)
        labels = torch.as_tensor(labels)
        if labels.dtype.is_floating_point or labels.ndim != 1:
            raise UnknownClassError(
                f"labels must be an integer tensor (B,), got {labels.dtype} {tuple(labels.shape)}"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.config.num_classes):
            raise UnknownClassError(
                f"class labels must lie in 0..{self.config.num_classes - 1}, got {labels.tolist()}"
            )
        return self.class_emb(labels.long())

    # ------------------------------------------------------------------ MAE encoder / decoder

    def forward_encoder(
        self, tokens: torch.Tensor, mask: torch.Tensor, class_embedding: torch.Tensor
    ) -> torch.Tensor:
        """Known tokens + buffer slots (holding the class embedding) -> (B, buffer + n_known, enc_dim).

        Every row must mask the same number of tokens (as MAR's order-based masks do)."""
        x = self.z_proj(tokens)
        b, _, dim = x.shape
        buffer = self.config.buffer_size
        if self.training and self.config.class_dropout > 0:
            drop = (torch.rand(b, device=x.device) < self.config.class_dropout).unsqueeze(-1).to(x.dtype)
            class_embedding = drop * self.fake_latent + (1 - drop) * class_embedding
        x = torch.cat([class_embedding.unsqueeze(1).expand(b, buffer, dim), x], dim=1)
        x = self.z_proj_ln(x + self.encoder_pos_embed)
        keep = torch.cat([torch.ones(b, buffer, device=x.device), 1 - mask], dim=1).bool()
        return self.encoder(embeddings=x[keep].reshape(b, -1, dim))

    def forward_decoder(self, encoded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder output -> per-token conditions (B, seq_len, dec_dim) for the diffusion head."""
        x = self.decoder_embed(encoded)
        b, _, dim = x.shape
        keep = torch.cat([torch.ones(b, self.config.buffer_size, device=x.device), 1 - mask], dim=1).bool()
        full = self.mask_token.expand(b, keep.shape[1], dim).clone().to(x.dtype)
        full[keep] = x.reshape(-1, dim)
        x = self.decoder(embeddings=full + self.decoder_pos_embed)
        return x[:, self.config.buffer_size :] + self.diffusion_pos_embed

    # ------------------------------------------------------------------ training

    def random_orders(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = generator.device if generator is not None else self.fake_latent.device
        return torch.stack(
            [torch.randperm(self.seq_len, generator=generator, device=device) for _ in range(batch)]
        )

    def loss(
        self, labels: torch.Tensor, tokens: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """MAR's objective: mask a random ratio (truncated normal on [mask_ratio_min, 1]) in a random order,
        predict the masked tokens' diffusion loss from the decoder outputs."""
        b = tokens.shape[0]
        orders = self.random_orders(b, generator).to(tokens.device)
        ratio = sample_mask_ratio(self.config.mask_ratio_min, generator=generator, device=tokens.device)
        mask = mask_by_order(math.ceil(self.seq_len * ratio), orders)
        z = self.forward_decoder(self.forward_encoder(tokens, mask, self.class_embedding(labels, b)), mask)
        mul = self.config.diffusion_batch_mul
        return self.head.loss(
            tokens.reshape(-1, tokens.shape[-1]).repeat(mul, 1),
            z.reshape(-1, z.shape[-1]).repeat(mul, 1),
            mask.reshape(-1).repeat(mul),
        )

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor,
        *,
        num_iter: int = 16,
        cfg_scale: float = 1.0,
        cfg_schedule: str = "linear",
        temperature: float = 1.0,
        clip_x0: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Tokens (B, seq_len, token_dim) generated in `num_iter` steps over a random order; a cosine schedule
        sets how many stay masked, CFG rises linearly from 1 to `cfg_scale` with the fraction generated.
        `clip_x0` (off in MAR) clamps the diffusion head's predicted clean tokens at every denoising step."""
        if cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
        if cfg_schedule not in ("linear", "constant"):
            raise ValueError(f"cfg_schedule must be 'linear' or 'constant', got {cfg_schedule!r}")
        b = labels.shape[0]
        cond_emb = self.class_embedding(labels, b)
        device = cond_emb.device
        mask = torch.ones(b, self.seq_len, device=device)
        tokens = torch.zeros(b, self.seq_len, self.config.token_dim, device=device)
        orders = self.random_orders(b, generator).to(device)
        guided = cfg_scale != 1.0
        for step in range(num_iter):
            x_tokens, x_mask, emb = tokens, mask, cond_emb
            if guided:
                x_tokens, x_mask = torch.cat([tokens, tokens]), torch.cat([mask, mask])
                emb = torch.cat([cond_emb, self.fake_latent.expand(b, -1)])
            z = self.forward_decoder(self.forward_encoder(x_tokens, x_mask, emb), x_mask)
            ratio = math.cos(math.pi / 2.0 * (step + 1) / num_iter)
            mask_len = max(1, min(int(mask[0].sum().item()) - 1, math.floor(self.seq_len * ratio)))
            next_mask = mask_by_order(mask_len, orders)
            to_predict = mask.bool() if step >= num_iter - 1 else mask.bool() ^ next_mask.bool()
            mask = next_mask
            rows = torch.cat([to_predict, to_predict]) if guided else to_predict
            scale = (
                1 + (cfg_scale - 1) * (self.seq_len - mask_len) / self.seq_len
                if cfg_schedule == "linear"
                else cfg_scale
            )
            sampled = self.head.sample(
                z[rows], cfg_scale=scale, temperature=temperature, clip_x0=clip_x0, generator=generator
            )
            if guided:
                sampled = sampled.chunk(2)[0]
            tokens = tokens.clone()
            tokens[to_predict] = sampled
        return tokens

    # ------------------------------------------------------------------ files


register_image_family(MaskedAutoregressive)
