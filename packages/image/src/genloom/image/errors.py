"""Errors raised to users of genloom-image: each names what was expected and what was got.

All derive from core's `InputError` / `CheckpointError` (so from `GenloomError` and `ValueError`), so a
caller can catch them by the house base class or as plain `ValueError`.
"""

from __future__ import annotations

from genloom.core.errors import CheckpointError as _CoreCheckpointError
from genloom.core.errors import InputError


class ImageInputError(InputError):
    """An image, tensor or folder of images does not have the expected size, mode or content."""


class DatasetNotFoundError(InputError):
    """A data set name is neither a built-in data set nor an existing folder of images."""


class UnknownClassError(InputError):
    """A class label is out of range or not one of the data set's class names."""


class CheckpointError(_CoreCheckpointError):
    """A checkpoint or preset folder is missing, malformed, or of the wrong model family."""
