"""Errors of genloom-timeseries meant for users (bad series, bad checkpoint), on core's hierarchy.

They subclass `genloom.core.errors` classes (so `GenloomError` and `ValueError` catch them, and the
`genloom` CLI prints them as one line); the message always names what was expected, what was got, and
where (column, row).
"""

from __future__ import annotations

from genloom.core.errors import CheckpointError as CoreCheckpointError
from genloom.core.errors import InputError


class SeriesInputError(InputError):
    """A time series or CSV that cannot be used as given (missing/duplicate timestamps, NaN, ...)."""


class CheckpointError(CoreCheckpointError):
    """A state dict or config that does not match the architecture it is loaded into."""


__all__ = ["CheckpointError", "SeriesInputError"]
