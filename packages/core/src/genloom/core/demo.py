"""The demo contract: each package's `run_demo` writes real outputs and describes them for index.html."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

DemoKind = Literal["image", "audio", "video", "text", "mesh", "plot", "csv", "file"]


@dataclass(frozen=True)
class DemoItem:
    """One output of a package demo: a file under the demo folder, shown by index.html."""

    title: str
    path: Path
    kind: DemoKind
    caption: str = ""


class DemoFunction(Protocol):
    """What the `genloom.demo` entry point of a package points at."""

    def __call__(self, out_dir: Path, *, device: str = "cpu") -> list[DemoItem]: ...
