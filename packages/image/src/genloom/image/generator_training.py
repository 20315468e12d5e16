"""Training of the token models on an image data set: tokenize once with a frozen tokenizer, then fit.

`train_raster_ar` fits LlamaGen-style next-token prediction with class dropout (for CFG), AdamW, warmup +
cosine decay, gradient clipping and an optional EMA copy of the weights, logging the held-out loss.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from genloom.image.data import ImageDataset
from genloom.image.models.raster_ar import RasterAR
from genloom.image.tokenizers import VQAutoencoder


@dataclass
class GeneratorTrainConfig:
    steps: int = 5000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    ema_decay: float | None = 0.999
    log_every: int = 250
    seed: int = 0


@torch.no_grad()
def tokenize_dataset(
    tokenizer: VQAutoencoder, data: ImageDataset, *, batch_size: int = 256, device: str = "cpu"
) -> torch.Tensor:
    """Token ids (N, h*w) of every image, in raster order."""
    tokenizer = tokenizer.to(device).eval()
    out = [tokenizer.encode(chunk.to(device)).flatten(1).cpu() for chunk in data.images.split(batch_size)]
    return torch.cat(out)


def train_raster_ar(
    model: RasterAR,
    tokenizer: VQAutoencoder,
    train: ImageDataset,
    *,
    config: GeneratorTrainConfig | None = None,
    held_out: ImageDataset | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> RasterAR:
    """Train `model` on the tokens of `train`; returns the EMA model when `ema_decay` is set, else `model`."""
    cfg = config or GeneratorTrainConfig()
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    tokens = tokenize_dataset(tokenizer, train, device=device)
    labels = train.labels
    eval_tokens = tokenize_dataset(tokenizer, held_out, device=device)[:512] if held_out is not None else None
    model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema_decay else None
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / max(1, cfg.warmup_steps))
            * 0.5
            * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))
        ),
    )
    start = time.time()
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(len(tokens), (cfg.batch_size,), generator=generator)
        loss = model.loss(labels[idx].to(device), tokens[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if ema is not None:
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters()):
                    p_ema.lerp_(p, 1 - cfg.ema_decay)
        if step % cfg.log_every == 0 or step == cfg.steps:
            message = f"step {step}/{cfg.steps} train loss {loss.item():.4f}"
            if eval_tokens is not None:
                scored = ema if ema is not None else model
                scored.eval()
                with torch.no_grad():
                    held = scored.loss(
                        held_out.labels[: len(eval_tokens)].to(device), eval_tokens.to(device)
                    ).item()
                model.train()
                message += f" held-out loss {held:.4f}"
            log(f"{message} ({time.time() - start:.0f}s)")
    model.eval()
    return ema if ema is not None else model
