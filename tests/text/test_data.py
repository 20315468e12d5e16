"""Offline corpora: Multi30k loader (skips without ../shared), sacreBLEU helper, stdlib docstrings."""

from pathlib import Path

import pytest

from genloom.text.errors import DataNotFoundError, TextInputError
from genloom.text.multi30k import EXPECTED_SIZES, corpus_bleu, load_multi30k, resolve_multi30k_dir
from genloom.text.stdlib_corpus import split_corpus, stdlib_docstrings

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MULTI30K = SHARED / "data" / "multi30k"
needs_multi30k = pytest.mark.skipif(not MULTI30K.exists(), reason="../shared/data/multi30k is absent")


@needs_multi30k
def test_multi30k_splits_are_aligned_and_complete(monkeypatch):
    for split, size in EXPECTED_SIZES.items():
        pairs = load_multi30k(split, data_dir=MULTI30K)
        assert len(pairs) == size and all(de and en for de, en in pairs[:50])
    monkeypatch.setenv("GENLOOM_DATA_DIR", str(MULTI30K.parent))
    de, en = load_multi30k("test")[0]
    assert de.startswith("Ein Mann") and en.startswith("A man")
    en_first, de_first = load_multi30k("test", source="en", target="de")[0]
    assert (en_first, de_first) == (en, de)


def test_multi30k_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("GENLOOM_DATA_DIR", raising=False)
    with pytest.raises(DataNotFoundError, match="GENLOOM_DATA_DIR"):
        resolve_multi30k_dir()
    with pytest.raises(DataNotFoundError, match="missing"):
        load_multi30k("val", data_dir=tmp_path)
    with pytest.raises(TextInputError, match="unknown Multi30k split"):
        load_multi30k("dev", data_dir=tmp_path)


def test_corpus_bleu_is_detokenised_sacrebleu():
    refs = ["A man in an orange hat starring at something.", "Two dogs play in the snow."]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    partial = corpus_bleu(["A man in an orange hat looking at something.", "Two dogs run."], refs)
    assert 10 < partial < 80
    with pytest.raises(TextInputError):
        corpus_bleu(refs, refs[:1])


def test_stdlib_docstrings_are_deterministic_and_substantial():
    texts = stdlib_docstrings()
    assert texts == stdlib_docstrings()
    assert len(texts) > 500 and sum(map(len, texts)) > 200_000
    assert len(set(texts)) == len(texts) and min(map(len, texts)) >= 40
    assert any(t.startswith("Encode the bytes-like object s using Base64") for t in texts)
    train, val = split_corpus(texts)
    assert len(val) > 20 and not set(train) & set(val) and len(train) + len(val) == len(texts)
