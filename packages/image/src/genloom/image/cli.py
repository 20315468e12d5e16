"""`genloom image` commands."""

import typer

app = typer.Typer(help="genloom-image commands.", no_args_is_help=True)
