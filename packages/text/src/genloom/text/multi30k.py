"""Multi30k (task 1) loader and detokenised sacreBLEU evaluation.

The data are read from local gzip files `{train,val,test_2016_flickr}.{en,de}.gz` (the raw, untokenised
release); pass the folder, or set `GENLOOM_DATA_DIR` (the loader then reads `$GENLOOM_DATA_DIR/multi30k`).
Nothing is downloaded and nothing is copied into the repository.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

from genloom.text.errors import DataNotFoundError, TextInputError

SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}
LANGUAGES = ("de", "en")
EXPECTED_SIZES = {"train": 29_000, "val": 1_014, "test": 1_000}


def resolve_multi30k_dir(data_dir: str | Path | None = None) -> Path:
    """The Multi30k folder: `data_dir` if given, else `$GENLOOM_DATA_DIR/multi30k`."""
    if data_dir is None:
        root = os.environ.get("GENLOOM_DATA_DIR")
        if not root:
            raise DataNotFoundError(
                "Multi30k location unknown: pass data_dir (the folder holding train.de.gz, ...) "
                "or set GENLOOM_DATA_DIR to a folder containing multi30k/"
            )
        data_dir = Path(root) / "multi30k"
    path = Path(data_dir)
    if not path.is_dir():
        raise DataNotFoundError(f"Multi30k folder {path} does not exist")
    return path


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise DataNotFoundError(f"Multi30k file {path} is missing (expected the raw gzip release)")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def load_multi30k(
    split: str = "train", *, source: str = "de", target: str = "en", data_dir: str | Path | None = None
) -> list[tuple[str, str]]:
    """Aligned (source, target) sentence pairs of one split ("train", "val" or "test")."""
    if split not in SPLITS:
        raise TextInputError(f"unknown Multi30k split {split!r}; expected one of {', '.join(SPLITS)}")
    if {source, target} != set(LANGUAGES):
        raise TextInputError(f"Multi30k pairs are de/en, got source={source!r}, target={target!r}")
    folder = resolve_multi30k_dir(data_dir)
    src = _read_lines(folder / f"{SPLITS[split]}.{source}.gz")
    tgt = _read_lines(folder / f"{SPLITS[split]}.{target}.gz")
    if len(src) != len(tgt):
        raise TextInputError(f"Multi30k {split}: {len(src)} {source} lines but {len(tgt)} {target} lines")
    return list(zip(src, tgt))


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Detokenised sacreBLEU (13a tokenisation, case-sensitive) of plain-text hypotheses vs one reference each."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise TextInputError(
            f"BLEU needs one reference per hypothesis, got {len(hypotheses)} vs {len(references)}"
        )
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
