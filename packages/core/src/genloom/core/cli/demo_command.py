"""`genloom demo`: run every installed package's demo and write an index.html that shows the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from genloom.core.demo import DemoResult, run_demos

_STATUS_STYLE = {"ok": "green", "no demo yet": "yellow", "failed": "bold red"}


def demo_command(
    out: Annotated[Path, typer.Option(help="Folder for the outputs and index.html.")] = Path("genloom-demo"),
    only: Annotated[
        str | None, typer.Option(help="Comma-separated packages to run, for example image,text.")
    ] = None,
    device: Annotated[str, typer.Option(help="Torch device for the demos: cpu, cuda, cuda:1, ...")] = "cpu",
) -> None:
    """Run the demo of every installed genloom package into <out>/<package>/ and write <out>/index.html."""
    console = Console(stderr=True, soft_wrap=True)

    def started(name: str) -> None:
        console.print(f"[bold]{name}[/bold]: running demo ...")

    def finished(result: DemoResult) -> None:
        style = _STATUS_STYLE[result.status]
        detail = f" — {result.message}" if result.status == "failed" else ""
        count = f", {len(result.items)} outputs" if result.status == "ok" else ""
        console.print(
            f"[bold]{result.package}[/bold]: [{style}]{result.status}[/{style}] ({result.seconds:.1f} s{count}){detail}"
        )

    selected = [name for name in only.split(",") if name.strip()] if only else None
    results = run_demos(out, only=selected, device=device, on_start=started, on_done=finished)
    typer.echo(f"wrote {out / 'index.html'}")
    failed = [r.package for r in results if r.status == "failed"]
    if failed:
        console.print(
            f"[bold red]failed demos: {', '.join(failed)}[/bold red] (see demo-error.txt in their folders)"
        )
        raise typer.Exit(code=1)
