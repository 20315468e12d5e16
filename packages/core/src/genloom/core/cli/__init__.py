"""The `genloom` command line: core verbs (zoo, demo, bench) plus one sub-app per installed modality package.

`main()` is the console script. It turns every `GenloomError` (bad input a user can fix: an unknown
preset, a broken checkpoint, a missing output folder) into one line `error: <message>` on stderr and exit
code 2, instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from genloom.core.cli.bench_command import bench_command
from genloom.core.cli.demo_command import demo_command
from genloom.core.cli.plugins import add_plugin_apps
from genloom.core.cli.zoo_commands import zoo_app
from genloom.core.errors import GenloomError

CORE_COMMANDS = ("bench", "demo", "zoo")
ZOO_COMMANDS = ("check", "fetch", "info", "inspect", "list")
PLUGIN_COMMANDS = ("audio", "image", "mesh3d", "text", "ts", "video")
USAGE_ERROR_EXIT_CODE = 2


def build_app(*, plugins: bool = True) -> typer.Typer:
    """The `genloom` typer app: core verbs, then (if `plugins`) the installed packages' sub-apps."""
    app = typer.Typer(
        name="genloom",
        help="genloom: generative sequence models for every modality.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )
    app.add_typer(zoo_app, name="zoo")
    app.command("demo")(demo_command)
    app.command("bench")(bench_command)
    if plugins:
        add_plugin_apps(app, reserved=set(CORE_COMMANDS))
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI; a GenloomError becomes `error: <message>` and exit code 2.

    The modality sub-apps are imported only when the command may need them (not for `zoo` or `demo`),
    so core commands start fast and keep working even if a plugin is slow or broken.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    app = build_app(plugins=not (args and args[0] in CORE_COMMANDS))
    try:
        app(args=args, prog_name="genloom")
    except GenloomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(USAGE_ERROR_EXIT_CODE)


__all__ = ["CORE_COMMANDS", "PLUGIN_COMMANDS", "ZOO_COMMANDS", "build_app", "main"]
