"""Jacobi decoding and speculative Jacobi decoding (SJD, Teng et al. 2024) on the model's own KV cache.

The model keeps a window of guesses for the next `window` tokens. One forward over the chunk
[last known token, guesses] gives, in parallel, the model's distribution for every window position. The
guesses are then verified left to right:
- greedy (temperature 0, Jacobi decoding): a guess is accepted while it equals the argmax; the first
  mismatch is replaced by the argmax, so every pass commits at least one token and the output equals plain
  greedy decoding;
- sampling (SJD): a guess drawn from q is accepted with probability min(1, p/q), the first rejection is
  replaced by a draw from the residual max(0, p - q), and if all are accepted a bonus token is drawn; the
  output is therefore distributed exactly as plain sampling from the model (`speculative.verify_drafts`).
Unaccepted positions get new guesses from this pass's distributions (the Jacobi fixed-point update:
argmax, or a fresh sample whose q is remembered); positions past the window reuse the last distribution.
Rejected cache slots are dropped with `truncate_cache`. `stats.forward_passes` counts model passes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .autoregressive import CachedLM, DecodeStats, check_prompt
from .errors import SamplingError
from .logits import SamplingParams, sample_from_probs
from .speculative import commit_tokens, generated_tokens, prefilled_sequence, verify_drafts

__all__ = ["jacobi_generate", "speculative_jacobi_generate"]


@torch.no_grad()
def speculative_jacobi_generate(
    model: CachedLM,
    prompt: Tensor,
    max_new_tokens: int,
    *,
    window: int = 8,
    params: SamplingParams | None = None,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    stats: DecodeStats | None = None,
) -> Tensor:
    """SJD (or greedy Jacobi decoding when `params.temperature == 0`): new tokens [B, N] after `prompt` [B, T]."""
    check_prompt(model, prompt, max_new_tokens)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise SamplingError(f"window must be an int >= 1, got {window!r}")
    stats = DecodeStats() if stats is None else stats
    batch, prompt_len = prompt.shape
    device = prompt.device
    total = prompt_len + max_new_tokens
    seq = prefilled_sequence(model, prompt, max_new_tokens, stats)
    known = prompt_len
    guesses = torch.zeros(batch, 0, dtype=torch.long, device=device)  # the first pass is a plain AR step
    guess_probs: Tensor | None = None
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    while known < total and not (eos_id is not None and bool(finished.all())):
        n_guesses = min(guesses.shape[1], total - known - 1)
        drafts = guesses[:, :n_guesses]
        q = None if guess_probs is None else guess_probs[:, :n_guesses]
        chunk = torch.cat([seq[:, known - 1 : known], drafts], dim=1)
        logits = model(chunk, input_pos=torch.arange(known - 1, known + n_guesses, device=device)).float()
        stats.forward_passes += 1
        m, emitted, probs = verify_drafts(drafts, q, logits, params, generator)
        known, finished = commit_tokens(model, seq, emitted, known, finished, eos_id, stats)
        # Jacobi update: logits[:, j] predicted position (old known + j); the new window starts at old known + m + 1
        source = (torch.arange(window, device=device) + m + 1).clamp(max=n_guesses)
        if probs is None:
            guesses, guess_probs = logits.argmax(dim=-1)[:, source], None
        else:
            guess_probs = probs[:, source]
            guesses = sample_from_probs(guess_probs, generator)
    return generated_tokens(seq, prompt_len, known, eos_id)


def jacobi_generate(
    model: CachedLM,
    prompt: Tensor,
    max_new_tokens: int,
    *,
    window: int = 8,
    eos_id: int | None = None,
    stats: DecodeStats | None = None,
) -> Tensor:
    """Greedy Jacobi decoding: the same tokens as greedy `generate`, often in fewer forward passes."""
    return speculative_jacobi_generate(
        model,
        prompt,
        max_new_tokens,
        window=window,
        params=SamplingParams(temperature=0.0),
        eos_id=eos_id,
        stats=stats,
    )
