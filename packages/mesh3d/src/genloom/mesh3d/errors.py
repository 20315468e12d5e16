"""Errors that genloom-mesh3d raises for bad user input (mesh files, arrays, token sequences).

Both subclass `genloom.core.errors.InputError` (a `GenloomError` and a `ValueError`), so the `genloom` CLI
prints them as one line and `except ValueError` keeps working.
"""

from __future__ import annotations

from genloom.core.errors import InputError


class MeshInputError(InputError):
    """A mesh file or array that cannot be used: missing, unreadable, not a mesh, empty, malformed."""


class TokenSequenceError(InputError):
    """A token sequence that does not follow the tokenizer's layout (ids out of range, missing bos)."""


__all__ = ["MeshInputError", "TokenSequenceError"]
