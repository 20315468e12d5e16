"""`genloom video` commands."""

import typer

app = typer.Typer(help="genloom-video commands.", no_args_is_help=True)
