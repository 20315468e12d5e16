"""Codebook interleaving patterns (MusicGen-style delay, parallel, unrolled).

A codec gives K parallel token streams of T steps, codes[B, K, T]. A pattern says, for each step s of the
sequence an LM models, which timestep of each codebook sits there (or none): `step_timesteps[s, q]` is that
timestep or -1. The LM then sees a [B, K, S] grid and never hard-codes the delay (audiocraft's
`CodebooksPatternProvider` idea). Step 0 is normally empty so the first prediction is conditioned on a
special token only; MAGNeT's parallel pattern drops it (`empty_initial=-1`).

Semantics follow audiocraft's `codebooks_patterns.py` (checked against its outputs in
`tests/core/test_codebook_patterns.py`); the implementation is a dense index table and one gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class PatternSequence:
    """Values laid out by a pattern, the flat source index of each position, and which positions are real."""

    values: torch.Tensor
    indexes: torch.Tensor
    mask: torch.Tensor


class CodebookPattern:
    """A fixed layout of `n_q` codebooks over `timesteps` steps as a [S, n_q] table of timesteps (-1 = none)."""

    def __init__(self, step_timesteps: torch.Tensor, timesteps: int, n_q: int):
        if step_timesteps.ndim != 2 or step_timesteps.shape[1] != n_q:
            raise ValueError(f"step_timesteps must be [S, {n_q}], got {tuple(step_timesteps.shape)}")
        self.step_timesteps = step_timesteps.to(torch.long)
        self.timesteps = int(timesteps)
        self.n_q = int(n_q)
        self._check_monotonic()

    @classmethod
    def from_coords(cls, layout: list[list[tuple[int, int]]], timesteps: int, n_q: int) -> CodebookPattern:
        """Build from a list of steps, each a list of (timestep, codebook) pairs."""
        table = torch.full((len(layout), n_q), -1, dtype=torch.long)
        for s, coords in enumerate(layout):
            seen: set[int] = set()
            for t, q in coords:
                if q in seen:
                    raise ValueError(f"codebook {q} appears twice at sequence step {s}")
                seen.add(q)
                table[s, q] = t
        return cls(table, timesteps, n_q)

    def _check_monotonic(self) -> None:
        for q in range(self.n_q):
            column = self.step_timesteps[:, q]
            present = column[column >= 0]
            if present.numel() > 1 and bool((present[1:] < present[:-1]).any()):
                raise ValueError(f"codebook {q} goes back in time in the pattern")

    # ---- sizes -------------------------------------------------------------------------------------
    @property
    def num_sequence_steps(self) -> int:
        """Steps after the first one (audiocraft's convention: the layout length minus one)."""
        return self.step_timesteps.shape[0] - 1

    @property
    def max_delay(self) -> int:
        """How many steps the last timestep of the slowest codebook trails behind the sequence end."""
        later = self.step_timesteps[1:]
        latest = int(later.max().item()) + 1 if later.numel() and bool((later >= 0).any()) else 0
        return latest - self.timesteps

    @property
    def num_valid_steps(self) -> int:
        """Length of the prefix of steps that can be fully defined (used for training targets)."""
        return self.step_timesteps.shape[0] - self.max_delay

    def first_step_with_timestep(self, t: int, q: int | None = None) -> int | None:
        """The first sequence step holding timestep t (of codebook q, or of any codebook)."""
        table = self.step_timesteps if q is None else self.step_timesteps[:, q : q + 1]
        steps = torch.nonzero((table == t).any(dim=1)).flatten()
        return int(steps[0]) if steps.numel() else None

    def _ref_table(self, valid_only: bool) -> torch.Tensor:
        return self.step_timesteps[: self.num_valid_steps] if valid_only else self.step_timesteps

    # ---- index tables --------------------------------------------------------------------------------
    @lru_cache(maxsize=64)  # noqa: B019 - patterns are few and long-lived; the tables are pure functions
    def sequence_indexes(self, timesteps: int, valid_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """[K, S] flat indexes into codes.view(B, K*T) (+1 slot for the special token) and the valid mask."""
        if timesteps > self.timesteps:
            raise ValueError(f"codes have {timesteps} timesteps, the pattern was built for {self.timesteps}")
        table = self._ref_table(valid_only).T  # [K, S]
        q = torch.arange(self.n_q).unsqueeze(1)
        mask = (table >= 0) & (table < timesteps)
        indexes = torch.where(mask, table + q * timesteps, torch.full_like(table, self.n_q * timesteps))
        return indexes, mask

    @lru_cache(maxsize=64)  # noqa: B019
    def revert_indexes(
        self, sequence_steps: int, valid_only: bool, is_model_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[K, T] flat indexes into seq.view(B, K*S) (+1 special slot) and the valid mask."""
        ref = self._ref_table(valid_only)
        if sequence_steps > ref.shape[0]:
            raise ValueError(
                f"sequence of {sequence_steps} steps is longer than the pattern ({ref.shape[0]})"
            )
        if is_model_output and bool((ref[0] < 0).all()):
            # after a leading empty step, the prediction made at step s is for the content of step s+1;
            # without one (MAGNeT's parallel pattern) each step predicts its own content
            ref = ref[1:]
        ref = ref[:sequence_steps]
        indexes = torch.full((self.n_q, self.timesteps), self.n_q * sequence_steps, dtype=torch.long)
        mask = torch.zeros(self.n_q, self.timesteps, dtype=torch.bool)
        s_idx, q_idx = torch.nonzero((ref >= 0) & (ref < self.timesteps), as_tuple=True)
        t_idx = ref[s_idx, q_idx]
        indexes[q_idx, t_idx] = s_idx + q_idx * sequence_steps
        mask[q_idx, t_idx] = True
        return indexes, mask

    # ---- gathers -------------------------------------------------------------------------------------
    def build_sequence(
        self, codes: torch.Tensor, special_token: int, valid_only: bool = False
    ) -> PatternSequence:
        """codes [B, K, T] -> interleaved [B, K, S]; empty positions hold `special_token`."""
        batch, n_q, timesteps = codes.shape
        if n_q != self.n_q:
            raise ValueError(f"codes have {n_q} codebooks, the pattern has {self.n_q}")
        indexes, mask = self.sequence_indexes(timesteps, valid_only)
        indexes, mask = indexes.to(codes.device), mask.to(codes.device)
        flat = torch.cat([codes.reshape(batch, -1), codes.new_full((batch, 1), special_token)], dim=1)
        values = flat[:, indexes.reshape(-1)].view(batch, n_q, indexes.shape[-1])
        return PatternSequence(values, indexes, mask)

    def revert_sequence(
        self, sequence: torch.Tensor, special_token: int, valid_only: bool = False
    ) -> PatternSequence:
        """Interleaved [B, K, S] -> codes [B, K, T]; timesteps the sequence does not reach hold the token."""
        batch, n_q, steps = sequence.shape
        if n_q != self.n_q:
            raise ValueError(f"sequence has {n_q} codebooks, the pattern has {self.n_q}")
        indexes, mask = self.revert_indexes(steps, valid_only, False)
        indexes, mask = indexes.to(sequence.device), mask.to(sequence.device)
        flat = torch.cat([sequence.reshape(batch, -1), sequence.new_full((batch, 1), special_token)], dim=1)
        values = flat[:, indexes.reshape(-1)].view(batch, n_q, indexes.shape[-1])
        return PatternSequence(values, indexes, mask)

    def revert_logits(self, logits: torch.Tensor, fill: float, valid_only: bool = False) -> PatternSequence:
        """Model outputs [B, card, K, S] -> [B, card, K, T], each aligned with the timestep it predicts."""
        batch, card, n_q, steps = logits.shape
        if n_q != self.n_q:
            raise ValueError(f"logits have {n_q} codebooks, the pattern has {self.n_q}")
        indexes, mask = self.revert_indexes(steps, valid_only, True)
        indexes, mask = indexes.to(logits.device), mask.to(logits.device)
        flat = logits.reshape(batch, card, -1)
        flat = torch.cat([flat, flat.new_full((batch, card, 1), fill)], dim=-1)
        values = flat[:, :, indexes.reshape(-1)].view(batch, card, n_q, indexes.shape[-1])
        return PatternSequence(values, indexes, mask)


class PatternProvider:
    """Makes the pattern of a given length for a fixed number of codebooks (patterns are cached)."""

    def __init__(self, n_q: int):
        if n_q < 1:
            raise ValueError(f"n_q must be at least 1, got {n_q}")
        self.n_q = n_q
        self._cache: dict[int, CodebookPattern] = {}

    def get_pattern(self, timesteps: int) -> CodebookPattern:
        if timesteps not in self._cache:
            self._cache[timesteps] = CodebookPattern.from_coords(self._layout(timesteps), timesteps, self.n_q)
        return self._cache[timesteps]

    def _layout(self, timesteps: int) -> list[list[tuple[int, int]]]:
        raise NotImplementedError


class DelayPattern(PatternProvider):
    """Codebook q is shifted right by delays[q] steps (MusicGen); the first `flatten_first` timesteps are
    emitted one codebook per step; `empty_initial` extra empty steps lead (-1 drops the usual first one)."""

    def __init__(
        self, n_q: int, delays: list[int] | None = None, flatten_first: int = 0, empty_initial: int = 0
    ):
        super().__init__(n_q)
        self.delays = list(range(n_q)) if delays is None else list(delays)
        if len(self.delays) != n_q or sorted(self.delays) != self.delays or min(self.delays) < 0:
            raise ValueError(f"delays must be {n_q} non-decreasing non-negative ints, got {self.delays}")
        self.flatten_first = flatten_first
        self.empty_initial = empty_initial

    def _layout(self, timesteps: int) -> list[list[tuple[int, int]]]:
        lead = 0 if self.empty_initial < 0 else 1 + self.empty_initial
        layout: list[list[tuple[int, int]]] = [[] for _ in range(lead)]
        for t in range(min(timesteps, self.flatten_first)):
            layout.extend([(t, q)] for q in range(self.n_q))
        for t in range(self.flatten_first, timesteps + max(self.delays)):
            step = [(t - d, q) for q, d in enumerate(self.delays) if t - d >= self.flatten_first]
            layout.append(step)
        return layout


class ParallelPattern(DelayPattern):
    """All codebooks of a timestep at the same step (MAGNeT uses `empty_initial=-1`)."""

    def __init__(self, n_q: int, empty_initial: int = 0):
        super().__init__(n_q, [0] * n_q, empty_initial=empty_initial)


class UnrolledPattern(PatternProvider):
    """Codebooks flattened into inner steps per timestep (`flattening[q]` = inner step of codebook q),
    optionally delayed per inner step; full flattening by default."""

    def __init__(self, n_q: int, flattening: list[int] | None = None, delays: list[int] | None = None):
        super().__init__(n_q)
        flattening = list(range(n_q)) if flattening is None else list(flattening)
        delays = [0] * n_q if delays is None else list(delays)
        if len(flattening) != n_q or len(delays) != n_q:
            raise ValueError("flattening and delays need one entry per codebook")
        if sorted(flattening) != flattening or sorted(delays) != delays:
            raise ValueError("flattening and delays must be non-decreasing")
        self.groups: dict[int, tuple[list[int], int]] = {}
        for q, (inner, delay) in enumerate(zip(flattening, delays)):
            codebooks, group_delay = self.groups.get(inner, ([], delay))
            if group_delay != delay:
                raise ValueError(f"codebooks flattened to inner step {inner} must share one delay")
            self.groups[inner] = ([*codebooks, q], delay)
        self.inner_steps = max(self.groups) + 1
        self.max_delay = max(delays)

    def _layout(self, timesteps: int) -> list[list[tuple[int, int]]]:
        horizon = timesteps + self.max_delay
        keyed: list[tuple[int, list[tuple[int, int]]]] = [(-1, [])]
        for t in range(horizon):
            for inner in range(self.inner_steps):
                if inner not in self.groups:
                    keyed.append((t, []))
                    continue
                codebooks, delay = self.groups[inner]
                if t + delay < horizon:
                    keyed.append((t + delay, [(t, q) for q in codebooks]))
        return [coords for _, coords in sorted(keyed)]
