"""Errors raised by genloom's tokenizers when the input is not what they accept.

They subclass `genloom.core.errors.GenloomError` when that module exists (it is the house base class for
errors meant for users) and always `ValueError`, so `except ValueError` keeps working.
"""

from __future__ import annotations

try:  # the shared base class lives in genloom.core.errors once the core helper has created it
    from genloom.core.errors import GenloomError as _Base
except ImportError:  # pragma: no cover - depends on the state of the tree
    _Base = ValueError

# Keep `except ValueError` working whatever the house base class derives from.
_BASES: tuple[type[Exception], ...] = (_Base,) if issubclass(_Base, ValueError) else (_Base, ValueError)


class TokenizerError(*_BASES):
    """Base class of every tokenizer error (shape, layout, index range, unknown text, file format)."""


class TokenizerInputError(TokenizerError):
    """A tensor given to a quantizer has the wrong rank, channel count, size or dtype."""


class TokenIndexError(TokenizerError):
    """Token ids outside [0, vocab_size) (or a wrong index layout) were given to a decoder."""


class UnknownCharacterError(TokenizerError):
    """Text contains characters a tokenizer trained without byte fallback cannot represent."""
