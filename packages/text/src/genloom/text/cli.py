"""`genloom text` commands."""

import typer

app = typer.Typer(help="genloom-text commands.", no_args_is_help=True)
