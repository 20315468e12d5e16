"""User-facing errors of genloom-text.

They subclass `genloom.core.errors.InputError` when the core module exists, and `ValueError` otherwise,
so callers can catch either `GenloomError` or plain `ValueError`.
"""

from __future__ import annotations

try:  # the shared error hierarchy lives in core; fall back to ValueError while it is not there
    from genloom.core.errors import InputError as _InputErrorBase
except ImportError:  # pragma: no cover - depends on what core ships
    _InputErrorBase = ValueError


class TextInputError(_InputErrorBase):
    """Bad input to a text model, tokenizer or data loader (names what was expected and what was got)."""


class GraphTooSmallError(TextInputError):
    """A DA-Transformer graph has fewer vertices than the target has tokens, so no path can emit it."""


class DataNotFoundError(TextInputError):
    """A data set folder or file that a loader needs is missing."""
