"""Confidence-based iterative unmasking: MaskGIT (Chang et al. 2022), MAGNeT (Ziv et al. 2024),
MaskGCT (Wang et al. 2024) and Mask-Predict (CMLM, Ghazvininejad et al. 2019).

Start from a sequence where some (or all) positions hold the mask token. At every step the model predicts
all positions, a token is sampled at each masked position, and the least confident of the new tokens are
masked again so that exactly the number the schedule prescribes stays masked. In the first three variants
tokens once revealed are never changed. With N0 the number of masked positions at the start (per row, so prompts and inpainting
work) and gamma the mask schedule, the three variants differ as follows (step i of n):

| variant   | still masked after step i                                  | confidence ranked                 | sampling temperature |
|-----------|------------------------------------------------------------|-----------------------------------|----------------------|
| `maskgit` | floor(N0 gamma((i+1)/n)), >= 1 revealed, >= 1 kept masked  | log p + c (1 - (i+1)/n) Gumbel    | constant             |
| `magnet`  | max(1, floor(N0 gamma((i+1)/(n-1))))  (linspace(0, 1, n))  | log p (c = 0)                     | T (n-1-i)/n          |
| `maskgct` | floor(N0 gamma((i+1)/n)), no clamps                        | p + c (1 - i/n) Gumbel            | T (n-i)/n, greedy last |
| `mask_predict` | floor(N0 gamma((i+1)/n)), no clamps (use `linear`)    | log p when predicted, ALL tokens  | constant             |

(c = `choice_temperature`; every variant reveals everything at the last step.) MaskGCT writes its
schedule as sin(t pi/2) on t = 1 - (i+1)/n, which is the cosine schedule here.

Mask-Predict differs in what may be masked again: every token the sampler produced keeps the log-probability
it had when it was (last) predicted, and the lowest-scoring tokens of the whole sequence are masked, so a
token revealed earlier can be re-masked and change. That score is state: `step(..., scores=)` takes the
previous step's `MaskedStepOutput.scores` (None at the first step; tokens with no score, e.g. a prompt or
padding, rank +inf and are never masked). The paper's schedule is `linear`: n = T (n-1-i)/n after step i.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from .errors import SamplingError
from .logits import SamplingParams, process_logits, sample_from_probs

__all__ = ["MASK_SCHEDULES", "mask_ratio", "MaskedStepOutput", "MaskedSampler"]

MaskSchedule = Literal["cosine", "linear", "square", "cubic", "sqrt"]
Variant = Literal["maskgit", "magnet", "maskgct", "mask_predict"]

_DEFAULT_CHOICE_TEMPERATURE = {"maskgit": 4.5, "magnet": 0.0, "maskgct": 1.0, "mask_predict": 0.0}
_DEFAULT_ANNEAL = {"maskgit": False, "magnet": True, "maskgct": True, "mask_predict": False}


def _cosine(r: float) -> float:
    return math.cos(math.pi / 2 * r)


MASK_SCHEDULES: dict[str, Callable[[float], float]] = {
    # gamma(r): the fraction of the initially masked tokens still masked at progress r in [0, 1].
    "cosine": _cosine,  # MaskGIT's choice, also MAGNeT's and MaskGCT's
    "linear": lambda r: 1.0 - r,
    "square": lambda r: 1.0 - r**2,
    "cubic": lambda r: 1.0 - r**3,
    "sqrt": lambda r: 1.0 - math.sqrt(r),
}


def mask_ratio(schedule: str, progress: float) -> float:
    """gamma(progress): fraction still masked, clipped to [0, 1]."""
    if schedule not in MASK_SCHEDULES:
        raise SamplingError(f"unknown mask schedule {schedule!r}; expected one of {sorted(MASK_SCHEDULES)}")
    return min(1.0, max(0.0, MASK_SCHEDULES[schedule](min(1.0, max(0.0, progress)))))


@dataclass
class MaskedStepOutput:
    """Result of one unmasking step: `tokens` is the next state (mask token where still masked),
    `predicted` the sampled token at every position, `remasked` which tokens were masked again (newly
    sampled ones; any produced token for `mask_predict`), `scores` (mask_predict only, else None) the
    log-probability each position's token had when predicted (+inf where the sampler never predicted)."""

    tokens: Tensor
    predicted: Tensor
    remasked: Tensor
    scores: Tensor | None = None


class MaskedSampler:
    """Iterative parallel decoding of masked tokens; `set_steps(n)`, then `step(...)` n times or `sample(...)`.

    `choice_temperature` and `anneal_temperature` default to the variant's own choices (MaskGIT 4.5 and
    constant temperature; MAGNeT 0 and annealed; MaskGCT 1.0 and annealed).
    """

    def __init__(
        self,
        *,
        mask_token_id: int,
        schedule: MaskSchedule = "cosine",
        variant: Variant = "maskgit",
        choice_temperature: float | None = None,
        anneal_temperature: bool | None = None,
    ) -> None:
        if schedule not in MASK_SCHEDULES:
            raise SamplingError(
                f"unknown mask schedule {schedule!r}; expected one of {sorted(MASK_SCHEDULES)}"
            )
        if variant not in _DEFAULT_CHOICE_TEMPERATURE:
            raise SamplingError(
                f"unknown variant {variant!r}; expected 'maskgit', 'magnet', 'maskgct' or 'mask_predict'"
            )
        if choice_temperature is None:
            choice_temperature = _DEFAULT_CHOICE_TEMPERATURE[variant]
        if not choice_temperature >= 0:
            raise SamplingError(f"choice_temperature must be >= 0, got {choice_temperature}")
        if variant == "mask_predict" and choice_temperature != 0:
            raise SamplingError(
                f"mask_predict ranks tokens by their log-probability alone: choice_temperature must be 0, "
                f"got {choice_temperature}"
            )
        self.mask_token_id = int(mask_token_id)
        self.schedule = schedule
        self.variant = variant
        self.choice_temperature = float(choice_temperature)
        self.anneal_temperature = (
            _DEFAULT_ANNEAL[variant] if anneal_temperature is None else anneal_temperature
        )
        self.num_steps: int | None = None

    def set_steps(self, num_steps: int) -> None:
        if not isinstance(num_steps, int) or num_steps < 1:
            raise SamplingError(f"num_steps must be an int >= 1, got {num_steps!r}")
        self.num_steps = num_steps

    def _require_steps(self) -> int:
        if self.num_steps is None:
            raise SamplingError("call set_steps(n) before stepping the MaskedSampler")
        return self.num_steps

    def progress(self, step_index: int) -> float:
        """The schedule position read after step `step_index`."""
        n = self._require_steps()
        if self.variant == "magnet":
            return 1.0 if n == 1 else (step_index + 1) / (n - 1)
        return (step_index + 1) / n

    def mask_counts(self, num_initial_masked: Tensor) -> Tensor:
        """Number of tokens still masked after each step: [n, B] from the initial counts [B]."""
        n = self._require_steps()
        n0 = num_initial_masked.to(torch.long)
        counts, before = [], n0
        for i in range(n):
            if i == n - 1:
                after = torch.zeros_like(n0)
            else:
                # + 1e-9: floor of the exact value where it is an integer (1 - 5/6 in floats is 0.1666..63)
                ratio = mask_ratio(self.schedule, self.progress(i))
                scheduled = torch.floor(n0.double() * ratio + 1e-9).long()
                if self.variant == "maskgit":  # reveal >= 1 per step, keep >= 1 masked until the end
                    after = torch.minimum(before - 1, scheduled).clamp_min(1)
                elif self.variant == "magnet":
                    after = scheduled.clamp_min(1)  # maskgct and mask_predict: no clamps
                else:
                    after = scheduled
                after = torch.minimum(after, before)  # never more than what is masked now
            counts.append(after)
            before = after
        return torch.stack(counts)

    def _step_params(self, params: SamplingParams | None, step_index: int) -> SamplingParams:
        n = self._require_steps()
        params = SamplingParams() if params is None else params
        if not self.anneal_temperature or params.temperature == 0:
            return params
        if self.variant == "maskgct":
            if step_index == n - 1 and n > 1:
                return replace(params, temperature=0.0)  # MaskGCT takes the argmax at the last step
            return replace(params, temperature=max(params.temperature * (n - step_index) / n, 1e-3))
        return replace(params, temperature=max(params.temperature * (n - 1 - step_index) / n, 1e-2))

    def step(
        self,
        logits: Tensor,
        tokens: Tensor,
        step_index: int,
        *,
        num_initial_masked: Tensor,
        params: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        scores: Tensor | None = None,
    ) -> MaskedStepOutput:
        """One step: fill the masked positions of `tokens` [B, ...] from `logits` [B, ..., V], then mask
        again the least confident new tokens so that the scheduled number stays masked. `scores` [B, ...]
        (mask_predict only): the previous step's `MaskedStepOutput.scores`."""
        n = self._require_steps()
        if not 0 <= step_index < n:
            raise SamplingError(f"step_index must be in [0, {n}), got {step_index}")
        if num_initial_masked.shape != (tokens.shape[0],):
            raise SamplingError(
                f"num_initial_masked must have shape [B={tokens.shape[0]}], got {tuple(num_initial_masked.shape)}"
            )
        if scores is not None and (self.variant != "mask_predict" or scores.shape != tokens.shape):
            raise SamplingError(
                f"scores are Mask-Predict state: variant='mask_predict' and shape {tuple(tokens.shape)}, "
                f"got variant={self.variant!r} and shape {tuple(scores.shape)}"
            )
        keep_masked = self.mask_counts(num_initial_masked.to(tokens.device))[step_index]
        return self._step(logits, tokens, step_index, keep_masked, params, generator, scores)

    def _step(
        self,
        logits: Tensor,
        tokens: Tensor,
        step_index: int,
        keep_masked: Tensor,
        params: SamplingParams | None,
        generator: torch.Generator | None,
        scores: Tensor | None = None,
    ) -> MaskedStepOutput:
        n = self._require_steps()
        if logits.shape[:-1] != tokens.shape:
            raise SamplingError(
                f"logits must have shape tokens.shape + (V,) = {tuple(tokens.shape)} + (V,), got {tuple(logits.shape)}"
            )
        if self.mask_token_id < logits.shape[-1]:
            logits = logits.clone()
            logits[..., self.mask_token_id] = float("-inf")  # the model must never predict the mask token
        params = self._step_params(params, step_index)
        batch = tokens.shape[0]
        flat_tokens = tokens.reshape(batch, -1)
        flat_logits = logits.reshape(batch, flat_tokens.shape[1], -1)

        if params.greedy:
            probs = torch.softmax(process_logits(flat_logits, params).float(), dim=-1)
            sampled = flat_logits.argmax(dim=-1)
        else:
            probs = torch.softmax(process_logits(flat_logits, params).float(), dim=-1)
            sampled = sample_from_probs(probs, generator)
        is_masked = flat_tokens == self.mask_token_id
        predicted = torch.where(is_masked, sampled, flat_tokens)
        if self.variant == "mask_predict":
            return self._mask_predict(
                flat_logits, params, sampled, predicted, is_masked, keep_masked, scores, tokens.shape
            )

        confidence = probs.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
        if self.variant == "maskgct":
            noise_scale = self.choice_temperature * (1.0 - step_index / n)
        else:
            confidence = torch.log(confidence.clamp_min(1e-30))
            noise_scale = self.choice_temperature * (1.0 - (step_index + 1) / n)
        if noise_scale > 0:
            uniform = torch.rand(confidence.shape, device=confidence.device, generator=generator)
            gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
            confidence = confidence + noise_scale * gumbel
        confidence = confidence.masked_fill(~is_masked, float("inf"))

        ranks = torch.empty_like(flat_tokens).scatter_(
            -1,
            torch.argsort(confidence, dim=-1, stable=True),
            torch.arange(flat_tokens.shape[1], device=tokens.device).expand_as(flat_tokens),
        )
        remask = (ranks < keep_masked.unsqueeze(-1)) & is_masked
        next_tokens = predicted.masked_fill(remask, self.mask_token_id)
        return MaskedStepOutput(
            tokens=next_tokens.reshape(tokens.shape),
            predicted=predicted.reshape(tokens.shape),
            remasked=remask.reshape(tokens.shape),
        )

    def _mask_predict(
        self,
        flat_logits: Tensor,
        params: SamplingParams,
        sampled: Tensor,
        predicted: Tensor,
        is_masked: Tensor,
        keep_masked: Tensor,
        scores: Tensor | None,
        shape: torch.Size,
    ) -> MaskedStepOutput:
        """Score new tokens by their log-probability, keep older tokens' scores, mask the lowest overall."""
        log_probs = torch.log_softmax(process_logits(flat_logits, params).float(), dim=-1)
        new_scores = log_probs.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
        previous = (
            torch.full_like(new_scores, float("inf"))
            if scores is None
            else scores.reshape(new_scores.shape).float()
        )
        new_scores = torch.where(is_masked, new_scores, previous)
        ranks = torch.empty_like(predicted).scatter_(
            -1,
            torch.argsort(new_scores, dim=-1, stable=True),
            torch.arange(predicted.shape[1], device=predicted.device).expand_as(predicted),
        )
        remask = (ranks < keep_masked.unsqueeze(-1)) & torch.isfinite(new_scores)
        return MaskedStepOutput(
            tokens=predicted.masked_fill(remask, self.mask_token_id).reshape(shape),
            predicted=predicted.reshape(shape),
            remasked=remask.reshape(shape),
            scores=new_scores.reshape(shape),
        )

    def sample(
        self,
        forward_fn: Callable[[Tensor], Tensor],
        tokens: Tensor,
        *,
        params: SamplingParams | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Run all `set_steps` steps with `forward_fn(tokens) -> logits`; returns tokens with no mask left."""
        n = self._require_steps()
        counts = self.mask_counts((tokens == self.mask_token_id).reshape(tokens.shape[0], -1).sum(-1))
        scores = None
        for i in range(n):
            out = self._step(forward_fn(tokens), tokens, i, counts[i], params, generator, scores)
            tokens, scores = out.tokens, out.scores
        return tokens
