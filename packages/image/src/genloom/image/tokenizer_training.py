"""Training of the image tokenizers: reconstruction loss, optional patch-GAN, codebook usage and restarts.

The official repositories mostly release tokenizer weights without training code; this loop trains any of
`VQAutoencoder`, `MultiScaleVQAutoencoder` and `KLAutoencoder` on an `ImageDataset`. Loss = L1 + MSE
reconstruction + the quantizer's codebook/commitment loss (or the KL term) + an optional hinge patch-GAN
term after `gan_start_step`. Codebook usage on held-out images is logged, and VQ codebooks revive codes
left unused for `dead_code_after` steps (the restart of core's `VectorQuantizer` and `MultiScaleResidualVQ`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.image.data import ImageDataset
from genloom.image.tokenizers import KLAutoencoder, MultiScaleVQAutoencoder, VQAutoencoder

Tokenizer = VQAutoencoder | MultiScaleVQAutoencoder | KLAutoencoder


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix / taming): strided 4x4 convs, one real/fake logit per image patch."""

    def __init__(self, *, in_channels: int = 3, width: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        channels = width
        for i in range(1, n_layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=False),
                nn.GroupNorm(min(32, out), out),
                nn.LeakyReLU(0.2, True),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


@dataclass
class TokenizerTrainConfig:
    """Optimisation settings; `gan_weight=0` disables the discriminator entirely."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    gan_weight: float = 0.0
    gan_start_step: int = 1000
    log_every: int = 100
    eval_images: int = 256
    seed: int = 0
    time_budget_s: float | None = None  # wall-clock cap: the cosine decay ends and training stops at it
    # Multi-scale VQ: sets its quantizer's `dead_code_after` (codes idle this many steps are re-seeded);
    # None keeps the model's own setting.
    restart_scale_codes_after: int | None = 200


@dataclass
class WallClockCosine:
    """Linear warmup then cosine decay over whichever ends first: `steps` or `seconds` of wall clock.

    Progress is max(step / steps, elapsed / seconds), so a run given a time budget still decays its learning
    rate to zero and stops on time, whatever speed the device turns out to have.
    """

    steps: int
    warmup_steps: int
    seconds: float | None = None
    start: float = field(default_factory=time.monotonic)

    def progress(self, step: int) -> float:
        """Fraction of the run done after `step` optimizer steps, in [0, 1]."""
        done = step / max(1, self.steps)
        if self.seconds is not None:
            done = max(done, (time.monotonic() - self.start) / max(self.seconds, 1e-9))
        return min(1.0, done)

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rate for the step after `step` steps."""
        warmup = min(1.0, (step + 1) / max(1, self.warmup_steps))
        return warmup * 0.5 * (1 + math.cos(math.pi * self.progress(step)))

    def finished(self, step: int) -> bool:
        return step >= self.steps or self.progress(step) >= 1.0


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    """Set every parameter group's learning rate to `base_lr * factor`."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor


@dataclass
class TokenizerMetrics:
    """Reconstruction quality and codebook health on held-out images."""

    step: int
    mse: float
    psnr: float
    codebook_usage: float | None = None  # fraction of codes used by the held-out images
    perplexity: float | None = None
    dead_codes_restarted: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


@dataclass
class TokenizerTrainReport:
    history: list[TokenizerMetrics] = field(default_factory=list)

    @property
    def final(self) -> TokenizerMetrics:
        return self.history[-1]


def _reconstruct(model: Tokenizer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reconstruction and token ids (None for continuous latents), in eval mode."""
    if isinstance(model, KLAutoencoder):
        return model.decode(model.encode(images).mode()), None
    ids = model.encode(images)
    return model.decode(ids), ids


def reconstruct(model: Tokenizer, images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] encoded and decoded by `model` (the posterior mode for the KL autoencoder)."""
    return _reconstruct(model, images)[0]


@torch.no_grad()
def evaluate_tokenizer(model: Tokenizer, images: torch.Tensor, *, batch_size: int = 128) -> TokenizerMetrics:
    """MSE / PSNR of reconstructions of images in [-1, 1] (PSNR on the [0, 1] scale) and codebook usage."""
    was_training = model.training
    model.eval()
    errors, all_ids = [], []
    for chunk in images.split(batch_size):
        recon, ids = _reconstruct(model, chunk)
        errors.append(F.mse_loss(recon.clamp(-1, 1), chunk, reduction="none").mean(dim=(1, 2, 3)))
        if ids is not None:
            all_ids.append(ids.flatten())
    model.train(was_training)
    mse = torch.cat(errors).mean().item()
    psnr = 10 * math.log10(4.0 / max(mse, 1e-12))  # peak-to-peak 2 in [-1, 1] is 1 in [0, 1]
    usage = perplexity = None
    if all_ids:
        counts = torch.bincount(torch.cat(all_ids), minlength=model.vocab_size).float()
        usage = (counts > 0).float().mean().item()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * probs.clamp_min(1e-12).log()).sum()).item()
    return TokenizerMetrics(step=0, mse=mse, psnr=psnr, codebook_usage=usage, perplexity=perplexity)


def _tokenizer_losses(model: Tokenizer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, auxiliary loss): the quantizer's codebook/commitment loss, or the weighted KL."""
    if isinstance(model, KLAutoencoder):
        out = model(images)
        return out.reconstruction, model.config.kl_weight * out.posterior.kl().mean()
    out = model(images)
    return out.reconstruction, out.quantized.loss


def _codes_restarted(model: nn.Module) -> int:
    """Codes the model's quantizers have restarted so far (their `codes_restarted` counters; a host read)."""
    return sum(int(b) for name, b in model.named_buffers() if name.rsplit(".", 1)[-1] == "codes_restarted")


def _log_metrics(
    model: Tokenizer, eval_images: torch.Tensor, step: int, restarted: int, start: float, loss: float
) -> tuple[TokenizerMetrics, str]:
    """Held-out metrics after `step` steps and the log line that reports them."""
    metrics = evaluate_tokenizer(model, eval_images)
    metrics.step, metrics.dead_codes_restarted, metrics.seconds = step, restarted, time.time() - start
    usage = (
        ""
        if metrics.codebook_usage is None
        else f" usage {metrics.codebook_usage:.3f} ppl {metrics.perplexity:.1f}"
    )
    line = (
        f"step {step} loss {loss:.4f} held-out mse {metrics.mse:.4f} psnr {metrics.psnr:.2f}{usage}"
        f" restarted {restarted} ({metrics.seconds:.0f}s)"
    )
    return metrics, line


def train_tokenizer(
    model: Tokenizer,
    train: ImageDataset,
    *,
    config: TokenizerTrainConfig | None = None,
    held_out: ImageDataset | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> TokenizerTrainReport:
    """Train `model` in place on `train` images; returns held-out metrics logged every `log_every` steps
    and after the last step (`config.steps`, or fewer when `config.time_budget_s` runs out first)."""
    cfg = config or TokenizerTrainConfig()
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.5, 0.9), weight_decay=cfg.weight_decay)
    schedule = WallClockCosine(cfg.steps, cfg.warmup_steps, cfg.time_budget_s)
    disc = disc_opt = None
    if cfg.gan_weight > 0:
        disc = PatchDiscriminator(in_channels=train.channels).to(device).train()
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    if isinstance(model, MultiScaleVQAutoencoder) and cfg.restart_scale_codes_after:
        model.quantize.dead_code_after = model.config.dead_code_after = cfg.restart_scale_codes_after
    eval_images = (held_out or train).images[: cfg.eval_images].to(device)
    report = TokenizerTrainReport()
    start, restarted_before, step, done = time.time(), _codes_restarted(model), 0, False
    while not done:
        set_lr(optimizer, cfg.lr, schedule.lr_factor(step))
        if disc_opt is not None:
            set_lr(disc_opt, cfg.lr, schedule.lr_factor(step))
        step += 1
        idx = torch.randint(len(train), (cfg.batch_size,), generator=generator)
        images = train.images[idx].to(device)
        recon, aux = _tokenizer_losses(model, images)
        loss = F.l1_loss(recon, images) + F.mse_loss(recon, images) + aux
        use_gan = disc is not None and step >= cfg.gan_start_step
        if use_gan:
            loss = loss - cfg.gan_weight * disc(recon).mean()  # hinge generator loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if use_gan:
            d_loss = F.relu(1 - disc(images)).mean() + F.relu(1 + disc(recon.detach())).mean()
            disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            disc_opt.step()
        done = schedule.finished(step)
        if step % cfg.log_every == 0 or done:
            restarted = _codes_restarted(model) - restarted_before
            metrics, line = _log_metrics(model, eval_images, step, restarted, start, loss.item())
            report.history.append(metrics)
            log(line)
    model.eval()
    return report


@torch.no_grad()
def calibrate_latent_scale(model: KLAutoencoder, images: torch.Tensor, *, batch_size: int = 256) -> float:
    """Set (and return) the KL autoencoder's `scale_factor` to 1 / std of its posterior means on `images`,
    so the continuous tokens MAR models have unit variance (MAR's 0.2325 is this number for its KL-16)."""
    device = next(model.parameters()).device
    model.eval()
    means = torch.cat([model.encode(chunk.to(device)).mode().cpu() for chunk in images.split(batch_size)])
    model.set_scale_factor(float(1.0 / means.std().clamp_min(1e-6)))
    return model.config.scale_factor
