"""Autoregressive generation on a static KV cache: prefill the prompt, then one token per forward.

A model only has to satisfy `CachedLM` (genloom.core.nn.Transformer does; wrap anything else):
`setup_cache(batch_size, max_seq_len)`, `truncate_cache(length)` and `model(tokens, input_pos=pos)` ->
logits [B, L, V] for tokens [B, L] written at cache slots `pos` [L]. Classifier-free guidance runs one doubled
batch [cond; uncond] and samples from `uncond + s * (cond - uncond)`; the chosen token is fed to both halves.
Token choice is `genloom.core.sampling.logits.sample_from_logits` (temperature 0 = greedy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .errors import SamplingError
from .logits import SamplingParams, sample_from_logits

__all__ = ["CachedLM", "DecodeStats", "generate", "check_prompt", "finish_rows"]


@runtime_checkable
class CachedLM(Protocol):
    """What the AR samplers need from a model."""

    def setup_cache(self, batch_size: int, max_seq_len: int) -> None: ...

    def truncate_cache(self, length: int) -> None: ...

    def __call__(self, tokens: Tensor, *, input_pos: Tensor) -> Tensor: ...


@dataclass
class DecodeStats:
    """Cost of one generation call: model forward passes (prefill included) and tokens produced per row."""

    forward_passes: int = 0
    draft_forward_passes: int = 0
    new_tokens: int = 0

    @property
    def tokens_per_pass(self) -> float:
        """Generated tokens per target forward pass, prefill included (1.0 for plain AR decoding)."""
        return self.new_tokens / max(self.forward_passes, 1)


def check_prompt(model: object, prompt: Tensor, max_new_tokens: int) -> None:
    """Shared argument checks of the AR samplers (clear errors instead of deep torch traces)."""
    for name in ("setup_cache", "truncate_cache"):
        if not callable(getattr(model, name, None)):
            raise SamplingError(
                f"the model must provide {name}() (the CachedLM protocol); {type(model).__name__} does not"
            )
    if not isinstance(prompt, Tensor) or prompt.dim() != 2 or prompt.dtype not in (torch.int64, torch.int32):
        got = f"{prompt.dtype} {tuple(prompt.shape)}" if isinstance(prompt, Tensor) else type(prompt).__name__
        raise SamplingError(f"prompt must be an integer tensor [B, T] with T >= 1, got {got}")
    if prompt.shape[1] < 1 or prompt.shape[0] < 1:
        raise SamplingError(
            f"prompt must have at least one row and one token, got shape {tuple(prompt.shape)}"
        )
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise SamplingError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")


def finish_rows(tokens: Tensor, finished: Tensor, eos_id: int | None) -> tuple[Tensor, Tensor]:
    """Replace tokens of rows that already emitted `eos_id` by `eos_id`; update the finished flags.

    tokens [B, K] are emitted in order; a row finishes at its first eos and stays finished."""
    if eos_id is None:
        return tokens, finished
    is_eos = tokens == eos_id
    after_eos = (torch.cumsum(is_eos.int(), dim=1) - is_eos.int()) > 0  # strictly after the first eos
    tokens = tokens.masked_fill(finished[:, None] | after_eos, eos_id)
    return tokens, finished | is_eos.any(dim=1)


def check_guided_steps(guided_steps: int | None, guided: bool) -> None:
    if guided_steps is None:
        return
    if not guided:
        raise SamplingError("guided_steps was given without classifier-free guidance (cfg_scale)")
    if isinstance(guided_steps, bool) or not isinstance(guided_steps, int) or guided_steps < 0:
        raise SamplingError(f"guided_steps must be an int >= 0 (or None: every step), got {guided_steps!r}")


def guides(step: int, guided_steps: int | None) -> bool:
    """Whether new token `step` (0-based) is guided: all are, or the first `guided_steps`."""
    return guided_steps is None or step < guided_steps


@torch.no_grad()
def generate(
    model: CachedLM,
    prompt: Tensor,
    max_new_tokens: int,
    *,
    params: SamplingParams | None = None,
    cfg_scale: float | None = None,
    uncond_prompt: Tensor | None = None,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    stats: DecodeStats | None = None,
    guided_steps: int | None = None,
) -> Tensor:
    """Generate `max_new_tokens` tokens after `prompt` [B, T]; returns the new tokens [B, N] (int64).

    `cfg_scale` with `uncond_prompt` [B, T] (e.g. the null class) applies classifier-free guidance, to the
    first `guided_steps` new tokens only when that is given (LlamaGen's `cfg_interval` c is c + 2). After a
    row emits `eos_id` its remaining tokens are `eos_id`; the loop stops early once every row has. Pass a
    `DecodeStats` to have the number of forward passes recorded.
    """
    check_prompt(model, prompt, max_new_tokens)
    batch, prompt_len = prompt.shape
    guided = cfg_scale is not None
    if guided:
        if uncond_prompt is None or tuple(uncond_prompt.shape) != tuple(prompt.shape):
            got = None if uncond_prompt is None else tuple(uncond_prompt.shape)
            raise SamplingError(
                f"cfg_scale needs uncond_prompt of the prompt's shape {tuple(prompt.shape)}, got {got}"
            )
        inputs = torch.cat([prompt, uncond_prompt.to(prompt.device)]).long()
    elif uncond_prompt is not None:
        raise SamplingError("uncond_prompt was given without cfg_scale")
    else:
        inputs = prompt.long()
    stats = DecodeStats() if stats is None else stats
    model.setup_cache(inputs.shape[0], prompt_len + max_new_tokens - 1)
    device = prompt.device

    check_guided_steps(guided_steps, guided)

    def next_token(logits: Tensor, step: int) -> Tensor:
        last = logits[:, -1].float()
        if guided:
            cond, uncond = last.chunk(2)
            last = uncond + cfg_scale * (cond - uncond) if guides(step, guided_steps) else cond
        return sample_from_logits(last, params, generator)

    logits = model(inputs, input_pos=torch.arange(prompt_len, device=device))
    stats.forward_passes += 1
    out = torch.empty(batch, max_new_tokens, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        token, finished = finish_rows(next_token(logits, step)[:, None], finished, eos_id)
        out[:, step] = token[:, 0]
        stats.new_tokens += 1
        if step == max_new_tokens - 1 or (eos_id is not None and bool(finished.all())):
            out[:, step + 1 :] = eos_id if eos_id is not None else 0
            break
        feed = token.repeat(2, 1) if guided else token
        logits = model(feed, input_pos=torch.tensor([prompt_len + step], device=device))
        stats.forward_passes += 1
    return out
