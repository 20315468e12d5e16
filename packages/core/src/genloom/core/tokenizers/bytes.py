"""Byte-level text tokenizer: UTF-8 bytes are the tokens, so any string encodes and nothing is unknown.

Ids 0..255 are the byte values themselves; the specials follow with fixed ids: pad=256, bos=257,
eos=258, mask=259 (vocab_size 260). Used by byte-level models (ByT5-style) and as a no-training baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from genloom.core.tokenizers.base import TextTokenizer

NUM_BYTES = 256
PAD_ID, BOS_ID, EOS_ID, MASK_ID = 256, 257, 258, 259


class ByteTokenizer(TextTokenizer):
    """UTF-8 bytes as ids 0..255, plus pad/bos/eos/mask at 256..259.

    `decode` never fails: byte sequences that are not valid UTF-8 (for example a sampled model output)
    decode with U+FFFD replacement characters (`errors="replace"`, or "strict" to raise instead).
    """

    pad_id, bos_id, eos_id, mask_id = PAD_ID, BOS_ID, EOS_ID, MASK_ID
    special_tokens = {"<pad>": PAD_ID, "<bos>": BOS_ID, "<eos>": EOS_ID, "<mask>": MASK_ID}

    def __init__(self, *, errors: str = "replace") -> None:
        if errors not in ("replace", "strict", "ignore"):
            raise ValueError(f"errors must be 'replace', 'strict' or 'ignore', got {errors!r}")
        self.errors = errors

    @property
    def vocab_size(self) -> int:
        return NUM_BYTES + len(self.special_tokens)

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(self.special_tokens.values())

    def _encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int] | Tensor, *, skip_special_tokens: bool = True) -> str:
        ids = self.check_ids(ids)
        names = {v: k for k, v in self.special_tokens.items()}
        pieces: list[str] = []
        run = bytearray()
        for i in ids:
            if i < NUM_BYTES:
                run.append(i)
                continue
            if not skip_special_tokens:
                pieces.append(run.decode("utf-8", errors=self.errors))
                pieces.append(names[i])
                run = bytearray()
        pieces.append(run.decode("utf-8", errors=self.errors))
        return "".join(pieces)

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size})"
