"""Real parallel text for the translators: encoding with length checks, random batches, data-spec parsing.

A data spec is a synthetic task name (`copy`, `reverse`, `sort`, `double`, `two_dialect`), a Multi30k
folder (`.../multi30k`, read De->En), or a tab-separated file of `source<TAB>target` lines (what
`genloom text distill` writes).
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from genloom.core.tokenizers import TextTokenizer
from genloom.text.errors import DataNotFoundError, TextInputError
from genloom.text.multi30k import load_multi30k
from genloom.text.tasks import TASK_NAMES, Seq2SeqBatch, pad_sequences


def encode_lines(
    tokenizer: TextTokenizer,
    lines: Sequence[str],
    *,
    max_length: int,
    truncate: bool = False,
    what: str = "line",
) -> list[list[int]]:
    """Ids of each line; an empty line or one longer than `max_length` tokens is an error, or is truncated
    with a warning when `truncate` (empty lines are always an error: there is nothing to translate)."""
    encoded = tokenizer.encode_batch(list(lines))
    out = []
    for number, (line, ids) in enumerate(zip(lines, encoded), start=1):
        if not line.strip() or not ids:
            raise TextInputError(f"{what} {number} is empty")
        if len(ids) > max_length:
            if not truncate:
                raise TextInputError(
                    f"{what} {number} has {len(ids)} tokens, more than the model's maximum of {max_length} "
                    "(pass --truncate to cut long lines with a warning)"
                )
            warnings.warn(f"{what} {number}: {len(ids)} tokens truncated to {max_length}", stacklevel=2)
            ids = ids[:max_length]
        out.append(ids)
    return out


class ParallelCorpus:
    """Encoded (source, target) id pairs; `sample` draws random batches (for `training.train`)."""

    def __init__(self, pairs: Sequence[tuple[list[int], list[int]]]) -> None:
        if not pairs:
            raise TextInputError("a parallel corpus needs at least one sentence pair")
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, batch_size: int, *, generator: torch.Generator) -> Seq2SeqBatch:
        index = torch.randint(0, len(self.pairs), (batch_size,), generator=generator).tolist()
        source, source_length = pad_sequences([self.pairs[i][0] for i in index])
        target, target_length = pad_sequences([self.pairs[i][1] for i in index])
        return Seq2SeqBatch(source, source_length, target, target_length)

    @classmethod
    def from_text(
        cls, tokenizer: TextTokenizer, pairs: Sequence[tuple[str, str]], *, max_source: int, max_target: int
    ) -> ParallelCorpus:
        """Encode text pairs, dropping (not truncating) pairs that are empty or too long for training."""
        sources = tokenizer.encode_batch([s for s, _ in pairs])
        targets = tokenizer.encode_batch([t for _, t in pairs])
        kept = [
            (s, t) for s, t in zip(sources, targets) if 0 < len(s) <= max_source and 0 < len(t) <= max_target
        ]
        return cls(kept)


def read_tsv_pairs(path: str | Path) -> list[tuple[str, str]]:
    """`source<TAB>target` lines of a (optionally gzipped) text file."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"parallel data file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    pairs = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise TextInputError(
                    f"{path}:{number}: expected 'source<TAB>target', got {len(parts)} fields"
                )
            pairs.append((parts[0], parts[1]))
    return pairs


def load_text_pairs(spec: str, split: str = "train") -> list[tuple[str, str]]:
    """Text pairs of a Multi30k folder (De->En) or a TSV file; synthetic task names are not text data."""
    if spec in TASK_NAMES:
        raise TextInputError(f"{spec!r} is a synthetic task, not a text data set")
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_multi30k(split, data_dir=path)
    return read_tsv_pairs(path)
