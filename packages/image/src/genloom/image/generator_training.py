"""Training of the token models on an image data set: tokenize once with a frozen tokenizer, then fit.

One loop serves the four families (`ar`, `maskgit`, `var`, `mar`): each model exposes `loss(labels, tokens)`
(VAR also takes the tokenizer's quantizer, which builds its next-scale inputs). AdamW with warmup + cosine
decay, gradient clipping, an EMA copy of the weights, and the held-out loss in the log.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from genloom.image.data import ImageDataset
from genloom.image.pipeline import FAMILY_NAMES, TOKENIZER_OF, tokens_of
from genloom.image.tokenizer_training import WallClockCosine, set_lr


@dataclass
class GeneratorTrainConfig:
    steps: int = 5000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    ema_decay: float | None = 0.999
    grad_clip: float = 1.0  # max global gradient norm (MAR's recipe: 3.0)
    log_every: int = 250
    eval_samples: int = 512  # held-out images scored at each log
    seed: int = 0
    time_budget_s: float | None = None  # wall-clock cap: the cosine decay ends and training stops at it


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


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p, 1 - decay)


@torch.no_grad()
def _held_out_loss(
    family: str, scored: nn.Module, tokenizer: nn.Module, held_out: ImageDataset, eval_tokens: torch.Tensor
) -> float:
    """The training loss of `scored` (in eval mode) on the held-out tokens."""
    device = next(scored.parameters()).device
    scored.eval()
    labels = held_out.labels[: len(eval_tokens)].to(device)
    return _loss(family, scored, tokenizer, labels, eval_tokens.to(device)).item()


def train_generator(
    model: nn.Module,
    tokenizer: nn.Module,
    train: ImageDataset,
    *,
    config: GeneratorTrainConfig | None = None,
    held_out: ImageDataset | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    stats: dict[str, float] | None = None,
) -> nn.Module:
    """Train `model` on the tokens of `train`; returns the EMA model when `ema_decay` is set, else `model`.

    Training runs `config.steps` steps, or fewer when `config.time_budget_s` runs out first (the cosine decay
    follows whichever ends first); `stats`, when given, receives the steps done and the seconds taken."""
    family = FAMILY_NAMES[model.family]
    if not isinstance(tokenizer, TOKENIZER_OF[family]):
        raise TypeError(
            f"a {family} generator trains on a {TOKENIZER_OF[family].__name__}, got {type(tokenizer).__name__}"
        )
    cfg = config or GeneratorTrainConfig()
    schedule = WallClockCosine(cfg.steps, cfg.warmup_steps, cfg.time_budget_s)  # the budget counts tokenizing
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
    start, step, done = time.time(), 0, False
    while not done:
        set_lr(optimizer, cfg.lr, schedule.lr_factor(step))
        step += 1
        idx = torch.randint(len(tokens), (cfg.batch_size,), generator=generator)
        loss = _loss(family, model, tokenizer, train.labels[idx].to(device), tokens[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if ema is not None:
            _update_ema(ema, model, cfg.ema_decay)
        done = schedule.finished(step)
        if step % cfg.log_every == 0 or done:
            message = f"[{family}] step {step}/{cfg.steps} train loss {loss.item():.4f}"
            if eval_tokens is not None:
                held = _held_out_loss(
                    family, ema if ema is not None else model, tokenizer, held_out, eval_tokens
                )
                model.train()
                message += f" held-out loss {held:.4f}"
            log(f"{message} ({time.time() - start:.0f}s)")
    if stats is not None:
        stats.update(steps=step, seconds=time.time() - start)
    model.eval()
    return ema if ema is not None else model
