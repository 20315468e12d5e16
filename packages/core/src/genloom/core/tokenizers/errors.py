"""Errors raised by genloom's tokenizers when the input is not what they accept.

They are `GenloomError`s (the house base class of errors meant for users, printed by the CLI as one line)
and also `ValueError`s, so `except ValueError` keeps working.
"""

from __future__ import annotations

from genloom.core.errors import GenloomError


class TokenizerError(GenloomError, ValueError):
    """Base class of every tokenizer error (shape, layout, index range, unknown text, file format)."""


class TokenizerInputError(TokenizerError):
    """A tensor given to a quantizer has the wrong rank, channel count, size or dtype, or a text
    tokenizer got something that is not text."""


class TokenIndexError(TokenizerError):
    """Token ids outside [0, vocab_size) (or a wrong index layout) were given to a decoder."""


class UnknownCharacterError(TokenizerError):
    """Text contains characters a tokenizer trained without byte fallback cannot represent."""
