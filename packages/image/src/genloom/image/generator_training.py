"""Training of the token models on an image data set: tokenize once with a frozen tokenizer, then fit.

One loop serves the four families (`ar`, `maskgit`, `var`, `mar`): each model exposes `loss(labels, tokens)`
(VAR also takes the tokenizer's quantizer, which builds its next-scale inputs). AdamW with warmup + cosine
decay, gradient clipping, an EMA copy of the weights, and the held-out loss in the log.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from genloom.image.data import ImageDataset
from genloom.image.pipeline import FAMILY_NAMES, TOKENIZER_OF, tokens_of


@dataclass
class GeneratorTrainConfig:
    steps: int = 5000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    ema_decay: float | None = 0.999
    log_every: int = 250
    eval_samples: int = 512  # held-out images scored at each log
    seed: int = 0


@torch.no_grad()
def tokenize_dataset(
    family: str,
    tokenizer: nn.Module,
    generator: nn.Module,
    data: ImageDataset,
    *,
    batch_size: int = 256,
    device: str = "cpu",
) -> torch.Tensor:
    """The tokens the family's generator models, for every image of `data` (on the CPU)."""
    tokenizer = tokenizer.to(device).eval()
    generator.to(device)
    return torch.cat(
        [
            tokens_of(family, tokenizer, generator, chunk.to(device)).cpu()
            for chunk in data.images.split(batch_size)
        ]
    )


def _loss(
    family: str, model: nn.Module, tokenizer: nn.Module, labels: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    if family == "var":
        return model.loss(labels, tokens, tokenizer.quantize)
    return model.loss(labels, tokens)


def train_generator(
    model: nn.Module,
    tokenizer: nn.Module,
    train: ImageDataset,
    *,
    config: GeneratorTrainConfig | None = None,
    held_out: ImageDataset | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> nn.Module:
    """Train `model` on the tokens of `train`; returns the EMA model when `ema_decay` is set, else `model`."""
    family = FAMILY_NAMES[model.family]
    if not isinstance(tokenizer, TOKENIZER_OF[family]):
        raise TypeError(
            f"a {family} generator trains on a {TOKENIZER_OF[family].__name__}, got {type(tokenizer).__name__}"
        )
    cfg = config or GeneratorTrainConfig()
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    tokens = tokenize_dataset(family, tokenizer, model, train, device=device)
    eval_tokens = (
        tokenize_dataset(family, tokenizer, model, held_out, device=device)[: cfg.eval_samples]
        if held_out is not None
        else None
    )
    model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema_decay else None
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name or "pos" in name else decay).append(p)
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
        loss = _loss(family, model, tokenizer, train.labels[idx].to(device), tokens[idx].to(device))
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
            message = f"[{family}] step {step}/{cfg.steps} train loss {loss.item():.4f}"
            if eval_tokens is not None:
                scored = ema if ema is not None else model.eval()
                with torch.no_grad():
                    labels = held_out.labels[: len(eval_tokens)].to(device)
                    held = _loss(family, scored, tokenizer, labels, eval_tokens.to(device)).item()
                model.train()
                message += f" held-out loss {held:.4f}"
            log(f"{message} ({time.time() - start:.0f}s)")
    model.eval()
    return ema if ema is not None else model
