"""Errors meant for users: one-line messages that name the problem, caught by the `genloom` CLI.

Every error a user can cause with bad input (a wrong preset name, a broken checkpoint, a missing output
folder) subclasses `GenloomError`, so the CLI prints `error: <message>` and exits with code 2 instead of
showing a traceback from deep inside torch.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable


class GenloomError(Exception):
    """Base class of user-facing genloom errors; `str(error)` is a single line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class UnknownPresetError(GenloomError, KeyError):
    """A preset (or family) name that is not registered; the message lists the closest known names."""

    def __init__(self, name: str, known: Iterable[str], *, what: str = "preset") -> None:
        known = sorted(set(known))
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        if close:
            hint = f"did you mean: {', '.join(close)}?"
        elif known:
            shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
            hint = f"known {what}s: {shown}"
        else:
            hint = f"no {what}s are registered (is the genloom package that provides it installed?)"
        self.name = name
        self.close_matches = close
        GenloomError.__init__(self, f"unknown {what} {name!r}; {hint}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self.args[0]


class ConfigError(GenloomError, ValueError):
    """A config (config.json, preset.json, TrainConfig) that is missing, malformed or inconsistent."""


class CheckpointError(GenloomError, ValueError):
    """A weights file that is missing, truncated, corrupt or does not fit the model built from its config."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint that would import or call something outside the allow-list; nothing was run."""


class InputError(GenloomError, ValueError):
    """User data of the wrong kind, shape, range or format."""


class OutputPathError(GenloomError, OSError):
    """An output path that cannot be written (for example its folder does not exist)."""

    def __str__(self) -> str:  # OSError would format its args otherwise
        return self.args[0]


def check_field_names(
    config_cls: type,
    names: Iterable[str],
    *,
    error: type[Exception] = ConfigError,
    what: str | None = None,
) -> set[str]:
    """Raise `error` naming every key of `names` that is not a field of the dataclass `config_cls` (and the
    known ones); return the known field names. The one check behind every config `from_dict`."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise error(
            f"unknown {what or config_cls.__name__} field(s) {unknown}; known fields: {sorted(known)}"
        )
    return known


__all__ = [
    "CheckpointError",
    "ConfigError",
    "GenloomError",
    "InputError",
    "OutputPathError",
    "UnknownPresetError",
    "UnsafeCheckpointError",
    "check_field_names",
]
