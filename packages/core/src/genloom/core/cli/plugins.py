"""Discovery of the modality sub-apps (entry-point group `genloom.cli`); a broken plugin is skipped."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import typer

CLI_GROUP = "genloom.cli"


def add_plugin_apps(app: typer.Typer, *, reserved: set[str]) -> list[str]:
    """Add every installed package's typer `app` as `genloom <name> ...`; return the names added.

    A plugin that fails to import, is not a typer app, or collides with a core verb is skipped with a
    one-line warning on stderr, so one broken package never breaks the whole CLI.
    """
    added = []
    for ep in sorted(entry_points(group=CLI_GROUP), key=lambda ep: ep.name):
        try:
            if ep.name in reserved or ep.name in added:
                raise ValueError(f"the name {ep.name!r} is already taken")
            sub = ep.load()
            if not isinstance(sub, typer.Typer):
                raise TypeError(f"expected a typer.Typer, got {type(sub).__name__}")
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            print(
                f"genloom: warning: skipping sub-command {ep.name!r} ({ep.value}): {type(exc).__name__}: {first_line}",
                file=sys.stderr,
            )
            continue
        app.add_typer(sub, name=ep.name)
        added.append(ep.name)
    return added
