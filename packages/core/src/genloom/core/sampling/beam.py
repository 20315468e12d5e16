"""Beam search on a static KV cache, for any model that satisfies `BeamLM` (`CachedLM` + `reorder_cache`).

Each prompt row is prefilled once, then its cache is gathered into `beam_size` rows
(`reorder_cache(arange(B).repeat_interleave(K))`); every step scores the K x V extensions of each row's
beams by their summed log-probabilities, keeps the best K, and gathers the caches of the surviving beams
(`reorder_cache(origin)`). A beam that emitted `eos_id` is finished: its only extension is `eos_id` at no
cost, so it keeps its place while its score stays fixed. The answer per row is the beam with the best
length-normalised score `sum log p / length ** length_penalty` (length counts the tokens up to and
including the first eos; `length_penalty=0` ranks by the raw sum). `genloom.core.nn.Transformer` and
`EncoderDecoder` provide `reorder_cache` (the latter also gathers cached cross-attention keys/values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .autoregressive import CachedLM, DecodeStats, check_prompt
from .errors import SamplingError

__all__ = ["BeamLM", "BeamSearchOutput", "beam_search"]


@runtime_checkable
class BeamLM(CachedLM, Protocol):
    """A `CachedLM` whose cache rows can be gathered: row i becomes old row `indices[i]` (any count)."""

    def reorder_cache(self, indices: Tensor) -> None: ...


@dataclass
class BeamSearchOutput:
    """The best beam per prompt row: new tokens [B, N] (eos-filled after the first eos), its normalised
    score [B] (float32) and its length [B] (tokens up to and including the first eos)."""

    tokens: Tensor
    scores: Tensor
    lengths: Tensor


def _check_beam_args(
    model: object, beam_size: int, length_penalty: float, suppress_ids: Sequence[int]
) -> None:
    if not callable(getattr(model, "reorder_cache", None)):
        raise SamplingError(
            f"beam search needs a model with reorder_cache(indices) (the BeamLM protocol); "
            f"{type(model).__name__} has none"
        )
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise SamplingError(f"beam_size must be an int >= 1, got {beam_size!r}")
    if not isinstance(length_penalty, int | float) or not math.isfinite(length_penalty):
        raise SamplingError(f"length_penalty must be a finite number, got {length_penalty!r}")
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in suppress_ids):
        raise SamplingError(f"suppress_ids must be non-negative ints, got {list(suppress_ids)!r}")


@torch.no_grad()
def beam_search(
    model: BeamLM,
    prompt: Tensor,
    max_new_tokens: int,
    *,
    beam_size: int,
    length_penalty: float = 1.0,
    eos_id: int | None = None,
    suppress_ids: Sequence[int] = (),
    stats: DecodeStats | None = None,
) -> BeamSearchOutput:
    """Beam search of `max_new_tokens` tokens after `prompt` [B, T] (see the module docstring).

    `suppress_ids` are token ids never generated (e.g. pad / bos / mask). Stops early once every beam
    of every row has finished. Pass a `DecodeStats` to have forward passes recorded.
    """
    check_prompt(model, prompt, max_new_tokens)
    _check_beam_args(model, beam_size, length_penalty, suppress_ids)
    batch, prompt_len = prompt.shape
    device, beams = prompt.device, beam_size
    stats = DecodeStats() if stats is None else stats
    model.setup_cache(batch, prompt_len + max_new_tokens - 1)
    logits = model(prompt.long(), input_pos=torch.arange(prompt_len, device=device))[:, -1]
    stats.forward_passes += 1
    vocab = logits.shape[-1]
    if eos_id is not None and not 0 <= eos_id < vocab:
        raise SamplingError(f"eos_id must lie in [0, {vocab}) (the vocabulary), got {eos_id}")
    if any(i >= vocab for i in suppress_ids) or (eos_id is not None and eos_id in suppress_ids):
        raise SamplingError(
            f"suppress_ids must lie in [0, {vocab}) and exclude eos_id, got {list(suppress_ids)}"
        )
    suppress = torch.tensor(list(suppress_ids), dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)
    model.reorder_cache(rows.repeat_interleave(beams))  # B prompt rows -> B*K beam rows
    logits = logits.repeat_interleave(beams, 0)

    scores = torch.full((batch, beams), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the K beams start identical: extend only the first
    history = torch.zeros(batch * beams, 0, dtype=torch.long, device=device)
    finished = torch.zeros(batch * beams, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * beams, dtype=torch.long, device=device)
    if eos_id is not None:
        frozen = torch.full((vocab,), float("-inf"), device=device)
        frozen[eos_id] = 0.0  # a finished beam extends only with eos, at no cost
    for step in range(max_new_tokens):
        log_probs = logits.float().log_softmax(-1)
        if suppress.numel():
            log_probs[:, suppress] = float("-inf")
        if eos_id is not None:
            log_probs = torch.where(finished[:, None], frozen, log_probs)
        candidates = (scores.view(-1, 1) + log_probs).view(batch, beams * vocab)
        scores, flat = candidates.topk(beams, dim=-1)
        origin = (flat // vocab + rows[:, None] * beams).view(-1)
        token = (flat % vocab).view(-1)
        history = torch.cat([history[origin], token[:, None]], dim=1)
        lengths = lengths[origin] + (~finished[origin]).long()
        finished = finished[origin] | (token == eos_id if eos_id is not None else torch.zeros_like(finished))
        stats.new_tokens += 1
        if step == max_new_tokens - 1 or (eos_id is not None and bool(finished.all())):
            break
        model.reorder_cache(origin)
        logits = model(token[:, None], input_pos=torch.tensor([prompt_len + step], device=device))[:, -1]
        stats.forward_passes += 1

    normalised = scores.view(-1) / lengths.clamp(min=1).float().pow(length_penalty)
    best = normalised.view(batch, beams).argmax(-1) + rows * beams
    tokens = torch.full((batch, max_new_tokens), eos_id if eos_id is not None else 0, device=device)
    tokens[:, : history.shape[1]] = history[best]
    return BeamSearchOutput(tokens=tokens, scores=normalised[best], lengths=lengths[best])
