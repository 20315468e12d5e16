"""`genloom audio` commands."""

import typer

app = typer.Typer(help="genloom-audio commands.", no_args_is_help=True)
