"""Speculative decoding with a draft model (Leviathan et al. 2023; Chen et al. 2023).

Each round the draft proposes `gamma` tokens one by one; the target scores them all in ONE chunked forward
over its KV cache; token i is accepted with probability min(1, p_i(y_i) / q_i(y_i)); at the first rejection a
token is drawn from the residual max(0, p - q) (normalised), and if every draft survives a bonus token comes
from the target's last distribution. The output is distributed exactly as sampling from the target (with the
same `SamplingParams` applied to both models); with temperature 0 it equals plain greedy decoding. Both
caches are rolled back by `truncate_cache`.

Batches: rows accept different numbers of drafts; a round commits the batch minimum m (+1 token per row,
which is an accepted draft or the row's correction: a valid target sample either way), so a batch stays in
lock-step on one cache position.

Cache invariant (shared with `jacobi.py`): with n tokens known (prompt + generated), the target cache holds
positions [0, n-1); the last known token is fed at the start of the next verification chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .autoregressive import CachedLM, DecodeStats, check_prompt, finish_rows
from .errors import SamplingError
from .logits import SamplingParams, process_logits, sample_from_probs

__all__ = ["speculative_generate", "verify_drafts", "token_probs"]


def token_probs(logits: Tensor, params: SamplingParams | None) -> Tensor | None:
    """Sampling distribution [..., V] (float32) after the logit processors; None for greedy decoding."""
    params = SamplingParams() if params is None else params
    if params.greedy:
        return None
    return torch.softmax(process_logits(logits.float(), params).float(), dim=-1)


def verify_drafts(
    drafts: Tensor,
    draft_probs: Tensor | None,
    target_logits: Tensor,
    params: SamplingParams | None,
    generator: torch.Generator | None,
) -> tuple[int, Tensor, Tensor]:
    """Speculative verification of `drafts` [B, L] against target logits [B, L+1, V] (logits i predict the
    token after input i, so `target_logits[:, i]` scores draft i and the last one gives the bonus token).

    `draft_probs` [B, L, V] are the distributions the drafts were drawn from (ignored when greedy).
    Returns (m, emitted [B, m+1], target_probs [B, L+1, V] or None): m = number of drafts committed for the
    whole batch; emitted = drafts[:, :m] plus each row's next token.
    """
    batch, length = drafts.shape
    target_probs = token_probs(target_logits, params)
    rows = torch.arange(batch, device=drafts.device)
    if target_probs is None:  # greedy: accept while the draft equals the target's argmax
        best = target_logits.argmax(dim=-1)
        accepted = drafts == best[:, :length]
    elif length == 0:
        accepted = torch.zeros(batch, 0, dtype=torch.bool, device=drafts.device)
    else:
        if draft_probs is None or tuple(draft_probs.shape[:2]) != (batch, length):
            raise SamplingError(f"sampled drafts [B={batch}, L={length}] need draft_probs [B, L, V]")
        p_draft = target_probs[:, :length].gather(-1, drafts[..., None])[..., 0]
        q_draft = draft_probs.gather(-1, drafts[..., None])[..., 0]
        coins = torch.rand(batch, length, generator=generator, device=drafts.device)
        accepted = coins * q_draft < p_draft
    n_accepted = torch.cumprod(accepted.int(), dim=1).sum(dim=1)  # leading run of accepted drafts per row
    m = int(n_accepted.min()) if length > 0 else 0
    if m == length:  # every row accepted every draft: bonus token from the last target distribution
        if target_probs is None:
            nxt = best[:, length]
        else:
            nxt = sample_from_probs(target_probs[:, length], generator)
    else:
        row_accepted = n_accepted > m
        if target_probs is None:
            correction = best[:, m]
        else:
            residual = (target_probs[:, m] - draft_probs[:, m]).clamp_min(0.0)
            mass = residual.sum(dim=-1, keepdim=True)
            residual = torch.where(mass > 0, residual / mass.clamp_min(1e-30), target_probs[:, m])
            correction = sample_from_probs(residual, generator)
        nxt = torch.where(row_accepted, drafts[rows, m], correction)
    emitted = torch.cat([drafts[:, :m], nxt[:, None]], dim=1)
    return m, emitted, target_probs


def prefilled_sequence(model: CachedLM, prompt: Tensor, max_new_tokens: int, stats: DecodeStats) -> Tensor:
    """Token buffer [B, T + N] holding `prompt`, with the cache of `model` set up and filled with
    prompt[:, :-1] (the cache invariant above: the last known token opens the first verification chunk)."""
    batch, prompt_len = prompt.shape
    total = prompt_len + max_new_tokens
    seq = torch.zeros(batch, total, dtype=torch.long, device=prompt.device)
    seq[:, :prompt_len] = prompt
    model.setup_cache(batch, total - 1)
    if prompt_len > 1:
        model(seq[:, : prompt_len - 1], input_pos=torch.arange(prompt_len - 1, device=prompt.device))
        stats.forward_passes += 1
    return seq


def commit_tokens(
    model: CachedLM,
    seq: Tensor,
    emitted: Tensor,
    known: int,
    finished: Tensor,
    eos_id: int | None,
    stats: DecodeStats,
) -> tuple[int, Tensor]:
    """Write the verified tokens `emitted` [B, m + 1] after the `known` ones (eos-finished rows padded with
    eos), roll the cache back to the invariant, and return (new known, new finished flags)."""
    emitted, finished = finish_rows(emitted, finished, eos_id)
    seq[:, known : known + emitted.shape[1]] = emitted
    known += emitted.shape[1]
    stats.new_tokens += emitted.shape[1]
    model.truncate_cache(known - 1)
    return known, finished


def generated_tokens(seq: Tensor, prompt_len: int, known: int, eos_id: int | None) -> Tensor:
    """The new tokens [B, N] of `seq`; positions never reached (every row finished early) are eos."""
    out = seq[:, prompt_len:]
    if eos_id is not None and known < seq.shape[1]:
        out[:, known - prompt_len :] = eos_id
    return out


@torch.no_grad()
def speculative_generate(
    target: CachedLM,
    draft: CachedLM,
    prompt: Tensor,
    max_new_tokens: int,
    *,
    gamma: int = 4,
    params: SamplingParams | None = None,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    stats: DecodeStats | None = None,
) -> Tensor:
    """Generate `max_new_tokens` tokens [B, N] after `prompt` [B, T] with `draft` proposing `gamma` tokens per
    target forward. `stats` (a `DecodeStats`) records target and draft forward passes."""
    check_prompt(target, prompt, max_new_tokens)
    check_prompt(draft, prompt, max_new_tokens)
    if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
        raise SamplingError(f"gamma must be an int >= 1, got {gamma!r}")
    stats = DecodeStats() if stats is None else stats
    batch, prompt_len = prompt.shape
    device = prompt.device
    total = prompt_len + max_new_tokens
    seq = prefilled_sequence(target, prompt, max_new_tokens, stats)
    draft.setup_cache(batch, total - 1)
    known, draft_known = prompt_len, 0  # tokens known; slots filled in the draft cache
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    while known < total and not (eos_id is not None and bool(finished.all())):
        n_drafts = min(gamma, total - known - 1)
        drafts = torch.zeros(batch, n_drafts, dtype=torch.long, device=device)
        draft_probs = []
        feed, feed_pos = seq[:, draft_known:known], torch.arange(draft_known, known, device=device)
        for i in range(n_drafts):
            logits = draft(feed, input_pos=feed_pos)[:, -1].float()
            stats.draft_forward_passes += 1
            probs = token_probs(logits, params)
            drafts[:, i] = logits.argmax(-1) if probs is None else sample_from_probs(probs, generator)
            if probs is not None:
                draft_probs.append(probs)
            feed, feed_pos = drafts[:, i : i + 1], torch.tensor([known + i], device=device)
        draft_known = known + n_drafts - 1 if n_drafts > 0 else draft_known
        chunk = torch.cat([seq[:, known - 1 : known], drafts], dim=1)
        target_logits = target(chunk, input_pos=torch.arange(known - 1, known + n_drafts, device=device))
        stats.forward_passes += 1
        q = torch.stack(draft_probs, dim=1) if draft_probs else None
        _, emitted, _ = verify_drafts(drafts, q, target_logits.float(), params, generator)
        known, finished = commit_tokens(target, seq, emitted, known, finished, eos_id, stats)
        draft_known = min(draft_known, known - 1)
        draft.truncate_cache(draft_known)
    return generated_tokens(seq, prompt_len, known, eos_id)
