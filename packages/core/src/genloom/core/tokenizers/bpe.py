"""Trainable BPE text tokenizer on top of HuggingFace `tokenizers` (Rust; fast training and batch encoding).

SentencePiece-style layout: whitespace becomes the "▁" marker (Metaspace), so decoding restores spaces,
and merges never cross words. Characters unseen in training are handled by one of two policies:
- byte fallback (default, as Llama's tokenizer): the 256 byte tokens "<0x00>".."<0xFF>" are in the
  vocabulary and an unknown character is spelled as its UTF-8 bytes, so every string encodes losslessly;
- error: `encode` raises `UnknownCharacterError` naming the characters.

Text is NFC-normalised (and lowercased with `lowercase=True`); `decode(encode(text)) == text` for NFC text
without leading whitespace (the first word's space marker is dropped on decode, as in SentencePiece).

Special tokens have fixed ids: <pad>=0, <bos>=1, <eos>=2, <mask>=3, <unk>=4, then any extra specials.
The tokenizer is saved as one HF-compatible `tokenizer.json`, written atomically.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import Tensor

from genloom.core.io import atomic_write_text
from genloom.core.tokenizers.base import TextTokenizer
from genloom.core.tokenizers.errors import TokenizerError, TokenizerInputError, UnknownCharacterError

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<mask>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, MASK_ID, UNK_ID = range(len(SPECIAL_TOKENS))
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
TOKENIZER_FILE = "tokenizer.json"
_SPACE_MARKER = "▁"


class BPETokenizer(TextTokenizer):
    """A trained BPE tokenizer. Build one with `BPETokenizer.train(...)` or `BPETokenizer.load(path)`."""

    pad_id, bos_id, eos_id, mask_id = PAD_ID, BOS_ID, EOS_ID, MASK_ID
    unk_id = UNK_ID

    def __init__(self, tokenizer: Tokenizer) -> None:
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            if vocab.get(token) != expected_id:
                raise TokenizerError(
                    f"not a genloom BPE tokenizer: special token {token!r} must have id {expected_id}, "
                    f"found {vocab.get(token)}"
                )
        self._tokenizer = tokenizer
        self._tokenizer.encode_special_tokens = True  # "<eos>" typed in the text is text, not a special
        state = json.loads(tokenizer.to_str())
        self.byte_fallback = bool(state["model"].get("byte_fallback"))
        self.lowercase = _has_normalizer(state.get("normalizer"), "Lowercase")
        self._special_ids = frozenset(i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special)

    # ------------------------------------------------------------------ training

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | None = None,
        *,
        files: Sequence[str | os.PathLike] | None = None,
        vocab_size: int = 8000,
        min_frequency: int = 2,
        lowercase: bool = False,
        byte_fallback: bool = True,
        extra_special_tokens: Sequence[str] = (),
        show_progress: bool = False,
    ) -> BPETokenizer:
        """Learn merges from `texts` (any iterable of strings) or from UTF-8 text `files` (one example per
        line, newline not included; `.gz` files are decompressed on the fly).

        `vocab_size` counts everything: specials, the 256 byte tokens (with byte fallback) and merges.
        """
        if (texts is None) == (files is None):
            raise TokenizerInputError("BPETokenizer.train needs exactly one of `texts` or `files`")
        specials = list(SPECIAL_TOKENS) + [t for t in extra_special_tokens if t not in SPECIAL_TOKENS]
        reserved = len(specials) + (len(BYTE_TOKENS) if byte_fallback else 0)
        if vocab_size <= reserved:
            raise TokenizerInputError(
                f"vocab_size={vocab_size} leaves no room for merges: {len(specials)} specials"
                + (" + 256 byte tokens" if byte_fallback else "")
                + f" already take {reserved} ids"
            )
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=byte_fallback))
        norms = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
        tokenizer.normalizer = normalizers.Sequence(norms)
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPACE_MARKER, prepend_scheme="first")
        tokenizer.decoder = decoders.Sequence(
            [decoders.ByteFallback(), decoders.Metaspace(replacement=_SPACE_MARKER, prepend_scheme="first")]
        )
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - (len(BYTE_TOKENS) if byte_fallback else 0),
            min_frequency=min_frequency,
            special_tokens=specials,
            show_progress=show_progress,
        )
        if files is not None:
            paths = [Path(f) for f in files]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise TokenizerInputError(f"training files not found: {missing}")
            texts = _read_lines(paths)
        tokenizer.train_from_iterator(_checked_texts(texts), trainer=trainer)
        if byte_fallback:
            tokenizer = _with_byte_tokens(tokenizer)
        return cls(tokenizer)

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> Path:
        """Write `tokenizer.json` (into `path` if it is a folder or has no suffix) atomically; returns the file."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / TOKENIZER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self._tokenizer.to_str(pretty=True))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a `tokenizer.json` written by `save` (or a folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise TokenizerInputError(f"no tokenizer file at {path}")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the Rust side raises a bare Exception on malformed JSON
            raise TokenizerError(f"cannot read tokenizer file {path}: {err}") from err
        return cls(tokenizer)

    # ------------------------------------------------------------------ encode / decode

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> frozenset[int]:
        return self._special_ids

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(token_id)

    def _encode(self, text: str) -> list[int]:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        if not self.byte_fallback:
            self._raise_on_unknown(text, [encoding])
        return encoding.ids

    def encode_batch(
        self, texts: Sequence[str], *, add_bos: bool = False, add_eos: bool = False
    ) -> list[list[int]]:
        """Encode many texts at once (parallel in the Rust library)."""
        texts = list(_checked_texts(texts))
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        if not self.byte_fallback:
            for text, encoding in zip(texts, encodings):
                self._raise_on_unknown(text, [encoding])
        head = [self.bos_id] if add_bos else []
        tail = [self.eos_id] if add_eos else []
        return [head + e.ids + tail for e in encodings]

    def decode(self, ids: Sequence[int] | Tensor, *, skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(self.check_ids(ids), skip_special_tokens=skip_special_tokens)

    def tokens(self, text: str) -> list[str]:
        """The token strings of `text` (for inspection)."""
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def _raise_on_unknown(self, text: str, encodings: list) -> None:
        for encoding in encodings:
            if self.unk_id in encoding.ids:
                chars = sorted(
                    {text[s:e] for i, (s, e) in zip(encoding.ids, encoding.offsets) if i == self.unk_id}
                )
                raise UnknownCharacterError(
                    f"text contains characters outside this BPE vocabulary (trained without byte "
                    f"fallback): {chars}; retrain with byte_fallback=True or clean the text"
                )

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, byte_fallback={self.byte_fallback})"


def _checked_texts(texts: Iterable[str]) -> Iterator[str]:
    if isinstance(texts, str):
        raise TokenizerInputError("expected an iterable of strings, got a single str")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TokenizerInputError(f"item {i} of the texts is a {type(text).__name__}, expected str")
        yield text


def _read_lines(paths: Sequence[Path]) -> Iterator[str]:
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                yield line.rstrip("\r\n")


def _has_normalizer(spec: dict | None, kind: str) -> bool:
    """Whether the normalizer spec of a tokenizer.json (possibly a Sequence) contains `kind`."""
    if not spec:
        return False
    if spec.get("type") == kind:
        return True
    return any(_has_normalizer(child, kind) for child in spec.get("normalizers", []))


def _with_byte_tokens(tokenizer: Tokenizer) -> Tokenizer:
    """Append "<0x00>".."<0xFF>" to the BPE vocabulary (regular tokens, used by the model's byte fallback)."""
    state = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    next_id = max(vocab.values()) + 1
    for token in BYTE_TOKENS:
        if token not in vocab:
            vocab[token] = next_id
            next_id += 1
    return Tokenizer.from_str(json.dumps(state))
