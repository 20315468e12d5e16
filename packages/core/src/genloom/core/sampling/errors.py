"""The error raised for bad sampler input (wrong shapes, out-of-range parameters).

It subclasses both `genloom.core.errors.GenloomError` (so the CLI prints it as one line) and `ValueError`.
"""

from __future__ import annotations

from genloom.core.errors import GenloomError


class SamplingError(GenloomError, ValueError):
    """Invalid sampler parameters or tensors (the message says what was expected and what was got)."""
