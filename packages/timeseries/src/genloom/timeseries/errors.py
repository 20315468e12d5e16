"""Errors of genloom-timeseries meant for users (bad series, bad config, bad checkpoint).

They subclass `genloom.core.errors.InputError` when core provides it, else `ValueError`, so callers can
catch either; the message always names what was expected, what was got, and where (column, row).
"""

from __future__ import annotations

try:  # core's shared error hierarchy, when it exists in the tree
    from genloom.core.errors import InputError as _BaseInputError
except ImportError:  # pragma: no cover - depends on what core ships
    _BaseInputError = ValueError


class SeriesInputError(_BaseInputError):
    """A time series or CSV that cannot be used as given (missing/duplicate timestamps, NaN, ...)."""


class CheckpointError(_BaseInputError):
    """A state dict or config that does not match the architecture it is loaded into."""
