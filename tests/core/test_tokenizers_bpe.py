"""BPETokenizer: training from strings and files, byte fallback vs errors, lowercase, atomic save / load."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from genloom.core.tokenizers import BPETokenizer, TokenizerError, TokenizerInputError, UnknownCharacterError
from genloom.core.tokenizers.bpe import BYTE_TOKENS, SPECIAL_TOKENS

CORPUS = [
    "A man in an orange hat starring at something.",
    "A Boston Terrier is running on lush green grass in front of a white fence.",
    "A girl in karate uniform breaking a stick with a front kick.",
    "Five people wearing winter jackets and helmets stand in the snow.",
    "People are fixing the roof of a house.",
    "A man in light colored clothing photographs a group of men.",
    "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    "Fünf Leute in Winterjacken und mit Helmen stehen im Schnee.",
] * 4


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=400, min_frequency=2)


def test_training_learns_merges_and_keeps_fixed_special_ids(tokenizer):
    assert tokenizer.vocab_size == 400
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == expected_id
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.mask_id) == (0, 1, 2, 3)
    ids = tokenizer.encode("A man in an orange hat")
    assert len(ids) < len("A man in an orange hat") / 2  # frequent words became single tokens
    assert tokenizer.tokens("A man in")[:2] == ["▁A", "▁man"]


def test_unseen_characters_fall_back_to_bytes_and_round_trip(tokenizer):
    text = "Ωmega café 日本 🦙 $#@"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.token_to_id("<0xE6>") in ids  # first byte of 日
    assert all(tokenizer.token_to_id(t) is not None for t in BYTE_TOKENS)


def test_invalid_byte_sequences_decode_with_replacement(tokenizer):
    lone_lead_byte = tokenizer.token_to_id("<0xE6>")  # first byte of a 3-byte character, alone
    assert tokenizer.decode([lone_lead_byte]) == "\ufffd"
    assert tokenizer.decode(tokenizer.encode("a man") + [lone_lead_byte]) == "a man\ufffd"


def test_special_token_text_is_encoded_as_plain_text(tokenizer):
    ids = tokenizer.encode("say <eos> now")
    assert tokenizer.eos_id not in ids
    assert tokenizer.decode(ids) == "say <eos> now"


def test_error_policy_names_the_unknown_characters():
    tok = BPETokenizer.train(CORPUS, vocab_size=120, min_frequency=2, byte_fallback=False)
    assert tok.decode(tok.encode("A man in a hat.")) == "A man in a hat."
    with pytest.raises(UnknownCharacterError, match="Ω"):
        tok.encode("Ωmega")
    with pytest.raises(UnknownCharacterError, match="日"):
        tok.encode_batch(["a man", "日"])


def test_lowercase_option():
    tok = BPETokenizer.train(CORPUS, vocab_size=350, min_frequency=2, lowercase=True)
    assert tok.lowercase
    assert tok.encode("A MAN In") == tok.encode("a man in")
    assert tok.decode(tok.encode("A Man")) == "a man"


def test_save_load_round_trip_is_atomic_and_identical(tokenizer, tmp_path):
    path = tokenizer.save(tmp_path / "tok")
    assert path == tmp_path / "tok" / "tokenizer.json"
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temp file left behind
    assert json.loads(path.read_text())["model"]["type"] == "BPE"
    loaded = BPETokenizer.load(path.parent)
    assert loaded.vocab_size == tokenizer.vocab_size and loaded.byte_fallback
    for text in CORPUS[:8] + ["Ωmega café"]:
        assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.encode_batch(CORPUS[:3], add_bos=True) == tokenizer.encode_batch(CORPUS[:3], add_bos=True)


def test_train_from_files_matches_train_from_strings(tmp_path):
    corpus_file = tmp_path / "train.txt"
    corpus_file.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    from_file = BPETokenizer.train(files=[corpus_file], vocab_size=300, min_frequency=2)
    from_strings = BPETokenizer.train(CORPUS, vocab_size=300, min_frequency=2)
    assert from_file.encode(CORPUS[1]) == from_strings.encode(CORPUS[1])
    gz_file = tmp_path / "train.txt.gz"
    with gzip.open(gz_file, "wt", encoding="utf-8") as handle:
        handle.write("\r\n".join(CORPUS))
    from_gz = BPETokenizer.train(files=[gz_file], vocab_size=300, min_frequency=2)
    assert from_gz.encode(CORPUS[1]) == from_strings.encode(CORPUS[1])


def test_bad_arguments_and_files(tmp_path):
    with pytest.raises(TokenizerInputError, match="exactly one"):
        BPETokenizer.train()
    with pytest.raises(TokenizerInputError, match="no room for merges"):
        BPETokenizer.train(CORPUS, vocab_size=200)
    with pytest.raises(TokenizerInputError, match="not found"):
        BPETokenizer.train(files=[tmp_path / "missing.txt"])
    with pytest.raises(TokenizerInputError, match="item 1"):
        BPETokenizer.train(["ok", 3], vocab_size=300)
    with pytest.raises(TokenizerInputError, match="no tokenizer file"):
        BPETokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="cannot read"):
        BPETokenizer.load(tmp_path)


def _multi30k_dir() -> Path:
    root = os.environ.get("GENLOOM_DATA_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return base / "multi30k"


def test_multi30k_round_trip_and_compression():
    """Train on Multi30k's English side (as the text package does) and decode every validation line back."""
    data = _multi30k_dir()
    if not (data / "train.en.gz").is_file():
        pytest.skip("Multi30k not present (../shared/data/multi30k or $GENLOOM_DATA_DIR/multi30k)")
    tok = BPETokenizer.train(files=[data / "train.en.gz"], vocab_size=4000)
    with gzip.open(data / "val.en.gz", "rt", encoding="utf-8") as handle:
        val = [line.rstrip("\r\n") for line in handle]
    batch = tok.encode_batch(val)
    assert [tok.decode(ids) for ids in batch] == val
    words = sum(len(line.split()) for line in val)
    assert sum(len(ids) for ids in batch) < 1.4 * words
