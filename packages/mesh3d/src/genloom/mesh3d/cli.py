"""`genloom mesh3d` commands."""

import typer

app = typer.Typer(help="genloom-mesh3d commands.", no_args_is_help=True)
