"""`genloom timeseries` commands."""

import typer

app = typer.Typer(help="genloom-timeseries commands.", no_args_is_help=True)
