"""Errors raised to users of genloom-image: each names what was expected and what was got.

They subclass `genloom.core.errors.GenloomError` when core provides it, and `ValueError` otherwise, so a
caller can always catch them as `ValueError`-like input errors.
"""

from __future__ import annotations

try:  # core's shared base class, when that module exists
    from genloom.core.errors import GenloomError as _Base
except ImportError:  # pragma: no cover - depends on the core package version
    _Base = ValueError


class ImageInputError(_Base):
    """An image, tensor or folder of images does not have the expected size, mode or content."""


class DatasetNotFoundError(_Base):
    """A data set name is neither a built-in data set nor an existing folder of images."""


class UnknownClassError(_Base):
    """A class label is out of range or not one of the data set's class names."""


class CheckpointError(_Base):
    """A checkpoint or preset folder is missing, malformed, or of the wrong model family."""
