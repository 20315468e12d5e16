"""User-facing errors of genloom-text, in the shared `genloom.core.errors` hierarchy (also `ValueError`s)."""

from __future__ import annotations

from genloom.core.errors import InputError


class TextInputError(InputError):
    """Bad input to a text model, tokenizer or data loader (names what was expected and what was got)."""


class GraphTooSmallError(TextInputError):
    """A DA-Transformer graph (or CTC input) is too short for its target, so no path can emit it."""


class DataNotFoundError(TextInputError):
    """A data set folder or file that a loader needs is missing."""
