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
from torch import Tensor

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


class BucketedBatches:
    """Length-bucketed training batches of a `ParallelCorpus`, served from padded tensors on `device`.

    Why: building a batch from Python lists (padding 256 rows, copying them to the GPU) cost more host time
    than a small model's whole GPU step. Here the corpus is padded once into [N, max_length] tensors on
    the device; each epoch a permutation is drawn on the host, cut into pools of `pool` batches, sorted
    by length inside each pool (batches of similar lengths: little padding, and the O(length) loops of
    the CTC / DAG losses run fewer times), cut into batches of `batch_size` (the remainder of the epoch
    is left out) and the batch order shuffled. The epoch's order goes to the device in one copy; a batch
    is then a slice of it, gathered on the device and cut to its widest row rounded up to `multiple`
    (1, the default, keeps the exact widths that `pad_sequences` gives and the NAT losses expect of
    targets; a larger multiple gives fewer distinct shapes to models that accept extra padding). `batch(index)` depends only on (seed, index), so a resumed run draws
    the batches of an uninterrupted one (`training.train` accepts this object as its batch source).
    """

    def __init__(
        self,
        corpus: ParallelCorpus,
        batch_size: int,
        *,
        device: str | torch.device = "cpu",
        seed: int = 0,
        pool: int = 50,
        multiple: int = 1,
    ) -> None:
        if batch_size < 1 or pool < 1 or multiple < 1:
            raise TextInputError(
                f"batch_size, pool and multiple must be >= 1, got {batch_size}, {pool}, {multiple}"
            )
        self.batch_size = min(batch_size, len(corpus))
        self.device, self.seed, self.pool, self.multiple = torch.device(device), seed, pool, multiple
        source, self.source_length = pad_sequences([s for s, _ in corpus.pairs])
        target, self.target_length = pad_sequences([t for _, t in corpus.pairs])
        self.source = source.to(self.device)
        self.target = target.to(self.device)
        self._source_length = self.source_length.to(self.device)
        self._target_length = self.target_length.to(self.device)
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long, device=self.device)
        self._widths: list[tuple[int, int]] = []

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.source_length) // self.batch_size

    def _width(self, lengths: Tensor, full: int) -> int:
        return min(full, -(-int(lengths.max()) // self.multiple) * self.multiple)

    def _build_epoch(self, epoch: int) -> None:
        """Draw the order and padded widths of every batch of `epoch` (host work, once per epoch)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        size, count = self.batch_size, len(self)
        permutation = torch.randperm(len(self.source_length), generator=generator)[: size * count]
        key = self.target_length * 1024 + self.source_length  # sort by target, then source length
        chunks = []
        for pool in permutation.split(size * self.pool):
            chunks.append(pool[torch.argsort(key[pool], stable=True)])
        batches = torch.cat(chunks).view(count, size)
        batches = batches[torch.randperm(count, generator=generator)]
        self._widths = [
            (
                self._width(self.source_length[rows], self.source.shape[1]),
                self._width(self.target_length[rows], self.target.shape[1]),
            )
            for rows in batches
        ]
        self._order = batches.reshape(-1).to(self.device)
        self._epoch = epoch

    def batch(self, index: int) -> Seq2SeqBatch:
        """Batch number `index` of the endless stream (epoch `index // len(self)`)."""
        epoch, position = divmod(index, len(self))
        if epoch != self._epoch:
            self._build_epoch(epoch)
        rows = self._order[position * self.batch_size : (position + 1) * self.batch_size]
        source_width, target_width = self._widths[position]
        return Seq2SeqBatch(
            self.source[:, :source_width].index_select(0, rows),
            self._source_length.index_select(0, rows),
            self.target[:, :target_width].index_select(0, rows),
            self._target_length.index_select(0, rows),
        )


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
