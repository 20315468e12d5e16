"""Synthetic seq2seq tasks for fast tests: copy, reverse, sort, double, and the multi-modal two-dialect task.

Every task draws sources of random symbols and knows all of its valid targets, so accuracy is exact:
an output is right when it equals one valid target. `two_dialect` has two valid targets per source
(every symbol translated through dialect A, or every symbol through dialect B, chosen at random);
a model that predicts positions independently (vanilla NAT) mixes the dialects and is wrong.

Token ids: 0 pad, 1 bos, 2 eos, 3 mask, 4 blank (CTC), symbols from 5 on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from genloom.text.errors import TextInputError
from genloom.text.specials import NUM_SPECIAL, PAD_ID

TASK_NAMES = ("copy", "reverse", "sort", "double", "two_dialect")


@dataclass(frozen=True)
class Seq2SeqBatch:
    """Right-padded source and target ids (no bos / eos: models add what they need)."""

    source: Tensor  # [B, S]
    source_length: Tensor  # [B]
    target: Tensor  # [B, T]
    target_length: Tensor  # [B]


def pad_sequences(sequences: Sequence[Sequence[int]], *, pad: int = PAD_ID) -> tuple[Tensor, Tensor]:
    """List of id lists -> (right-padded [B, max_len] long tensor, lengths [B]).

    The rows are padded as Python lists and turned into one tensor by one call: a tensor per row cost ~3 ms per
    batch of 256 (it dominated a GPU training step), and a scatter through a length mask ~60 us for one
    sentence (a fifth of a graphed batch-1 translation's host time)."""
    lengths = [len(s) for s in sequences]
    width = max(lengths, default=0)
    rows = [list(s) + [pad] * (width - n) for s, n in zip(sequences, lengths, strict=True)]
    padded = torch.tensor(rows, dtype=torch.long).reshape(len(rows), width)
    return padded, torch.tensor(lengths, dtype=torch.long)


@dataclass(frozen=True)
class Seq2SeqTask:
    """A synthetic task: `name` in TASK_NAMES, sources of `min_length..max_length` symbols."""

    name: str = "copy"
    num_symbols: int = 10
    min_length: int = 3
    max_length: int = 8

    def __post_init__(self) -> None:
        if self.name not in TASK_NAMES:
            raise TextInputError(
                f"unknown synthetic task {self.name!r}; expected one of {', '.join(TASK_NAMES)}"
            )
        if not 1 <= self.min_length <= self.max_length:
            raise TextInputError(
                f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}"
            )
        if self.name == "two_dialect" and self.num_symbols % 3 != 0:
            raise TextInputError(f"two_dialect needs num_symbols divisible by 3, got {self.num_symbols}")

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + self.num_symbols

    @property
    def max_target_length(self) -> int:
        return 2 * self.max_length if self.name == "double" else self.max_length

    def _source_symbols(self) -> int:
        """two_dialect reads the first third of the symbols and writes dialect A / B in the other two."""
        return self.num_symbols // 3 if self.name == "two_dialect" else self.num_symbols

    def valid_targets(self, source: Sequence[int]) -> list[list[int]]:
        """All correct targets for one source (ids, no bos / eos)."""
        src = list(source)
        if self.name == "copy":
            return [src]
        if self.name == "reverse":
            return [src[::-1]]
        if self.name == "sort":
            return [sorted(src)]
        if self.name == "double":
            return [[x for x in src for _ in range(2)]]
        third = self.num_symbols // 3
        return [[x + third for x in src], [x + 2 * third for x in src]]

    def sample(self, batch_size: int, *, generator: torch.Generator) -> Seq2SeqBatch:
        """Draw `batch_size` random (source, target) pairs."""
        lengths = torch.randint(self.min_length, self.max_length + 1, (batch_size,), generator=generator)
        symbols = torch.randint(0, self._source_symbols(), (batch_size, self.max_length), generator=generator)
        choice = torch.randint(0, 2, (batch_size,), generator=generator)
        sources, targets = [], []
        for row in range(batch_size):
            src = (symbols[row, : lengths[row]] + NUM_SPECIAL).tolist()
            options = self.valid_targets(src)
            sources.append(src)
            targets.append(options[int(choice[row]) % len(options)])
        source, source_length = pad_sequences(sources)
        target, target_length = pad_sequences(targets)
        return Seq2SeqBatch(source, source_length, target, target_length)

    def is_correct(self, source: Sequence[int], output: Sequence[int]) -> bool:
        """True when `output` equals one valid target of `source`."""
        return list(output) in self.valid_targets(source)

    def accuracy(self, batch: Seq2SeqBatch, outputs: Sequence[Sequence[int]]) -> float:
        """Exact-match accuracy of `outputs` (id lists without bos / eos / pad) on `batch`."""
        hits = 0
        for row, out in enumerate(outputs):
            src = batch.source[row, : batch.source_length[row]].tolist()
            hits += self.is_correct(src, out)
        return hits / max(len(outputs), 1)

    def dialect_mixing(self, batch: Seq2SeqBatch, outputs: Sequence[Sequence[int]]) -> float:
        """two_dialect only: fraction of outputs that use symbols of both dialects (the NAT failure mode)."""
        if self.name != "two_dialect":
            raise TextInputError(f"dialect_mixing applies to the two_dialect task, not {self.name!r}")
        third = self.num_symbols // 3
        mixed = 0
        for out in outputs:
            dialects = {(x - NUM_SPECIAL) // third for x in out if x >= NUM_SPECIAL}
            mixed += {1, 2} <= dialects
        return mixed / max(len(outputs), 1)
