"""ByteTokenizer: fixed ids, lossless UTF-8 round trips, never-failing decode."""

from __future__ import annotations

import pytest

from genloom.core.tokenizers import ByteTokenizer, TokenIndexError


def test_fixed_ids_and_vocab():
    tok = ByteTokenizer()
    assert tok.vocab_size == 260
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id) == (256, 257, 258, 259)
    assert tok.encode("Az") == [65, 122]


def test_any_unicode_round_trips_through_its_utf8_bytes():
    tok = ByteTokenizer()
    for text in ["héllo wörld", "日本語のテキスト", "emoji 🦙🧶", "tabs\tand\nnewlines", ""]:
        ids = tok.encode(text)
        assert ids == list(text.encode("utf-8"))
        assert tok.decode(ids) == text


def test_invalid_utf8_decodes_with_replacement_or_raises_in_strict_mode():
    broken = list(b"ok") + [0xE6, 0x97]  # a truncated 3-byte character
    assert ByteTokenizer().decode(broken) == "ok\ufffd"
    with pytest.raises(UnicodeDecodeError):
        ByteTokenizer(errors="strict").decode(broken)


def test_specials_are_kept_when_asked_and_split_byte_runs():
    tok = ByteTokenizer()
    ids = [tok.bos_id, *tok.encode("é"), tok.mask_id, *tok.encode("b"), tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "éb"
    assert tok.decode(ids, skip_special_tokens=False) == "<bos>é<mask>b<eos><pad>"


def test_out_of_range_ids_are_rejected():
    with pytest.raises(TokenIndexError, match=r"\[0, 260\)"):
        ByteTokenizer().decode([65, 260, -1])
