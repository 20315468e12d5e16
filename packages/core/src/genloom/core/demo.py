"""The demo contract and runner: each package's `run_demo` writes real outputs, `index.html` shows them.

`run_demos` calls every installed package's `run_demo` (entry-point group `genloom.demo`) into
`<out>/<package>/`. A package whose demo raises NotImplementedError is listed as "no demo yet"; any other
exception is recorded as a failure (its traceback saved beside its outputs) and the other packages still
run. `write_index_html` then writes one page that shows every output with its title and caption.
"""

from __future__ import annotations

import html
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal, Protocol, get_args

from genloom.core.errors import OutputPathError, UnknownPresetError
from genloom.core.io import atomic_write_text

DemoKind = Literal["image", "audio", "video", "text", "mesh", "plot", "csv", "file"]
DEMO_GROUP = "genloom.demo"
DEMO_ALIASES = {"ts": "timeseries"}  # CLI sub-command name -> demo entry-point name


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


DemoStatus = Literal["ok", "no demo yet", "failed"]


@dataclass
class DemoResult:
    """What happened when one package's demo ran."""

    package: str
    status: DemoStatus
    items: list[DemoItem] = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0
    traceback_file: Path | None = None


def discover_demos() -> dict[str, DemoFunction | Exception]:
    """Every `genloom.demo` entry point by name; one that fails to import maps to its exception."""
    found: dict[str, DemoFunction | Exception] = {}
    for ep in sorted(entry_points(group=DEMO_GROUP), key=lambda ep: ep.name):
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin is reported, not fatal
            found[ep.name] = exc
    return found


def _select(demos: Mapping[str, object], only: Iterable[str] | None) -> list[str]:
    if only is None:
        return sorted(demos)
    chosen = []
    for name in only:
        name = DEMO_ALIASES.get(name.strip(), name.strip())
        if not name:
            continue
        if name not in demos:
            raise UnknownPresetError(name, demos, what="demo package")
        if name not in chosen:
            chosen.append(name)
    return chosen


def _check_items(items: object, package_dir: Path) -> list[DemoItem]:
    """Items must be DemoItems of a known kind naming existing files inside the package folder."""
    if not isinstance(items, list | tuple):
        raise TypeError(f"run_demo must return a list of DemoItem, got {type(items).__name__}")
    checked = []
    for item in items:
        if not isinstance(item, DemoItem):
            raise TypeError(f"run_demo returned {type(item).__name__}, expected DemoItem")
        if item.kind not in get_args(DemoKind):
            raise ValueError(f"demo item {item.title!r} has unknown kind {item.kind!r}")
        path = Path(item.path)
        path = path if path.is_absolute() else package_dir / path
        if not path.is_file():
            raise FileNotFoundError(f"demo item {item.title!r} names {path}, which was not written")
        if not path.resolve().is_relative_to(package_dir.resolve()):
            raise ValueError(f"demo item {item.title!r} lies outside {package_dir}")
        checked.append(DemoItem(title=item.title, path=path, kind=item.kind, caption=item.caption))
    return checked


def run_demos(
    out_dir: str | Path,
    *,
    only: Iterable[str] | None = None,
    device: str = "cpu",
    demos: Mapping[str, DemoFunction | Exception] | None = None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[DemoResult], None] | None = None,
) -> list[DemoResult]:
    """Run the selected package demos into `<out_dir>/<package>/` and write `<out_dir>/index.html`.

    `out_dir` is created if needed, but its parent folder must exist (OutputPathError otherwise).
    """
    out_dir = Path(out_dir).expanduser()
    if not out_dir.parent.is_dir():
        raise OutputPathError(
            f"cannot write the demo into {out_dir}: the folder {out_dir.parent} does not exist"
        )
    demos = discover_demos() if demos is None else demos
    names = _select(demos, only)
    out_dir.mkdir(exist_ok=True)
    results = []
    for name in names:
        if on_start is not None:
            on_start(name)
        result = _run_one(name, demos[name], out_dir, device=device)
        results.append(result)
        if on_done is not None:
            on_done(result)
    write_index_html(out_dir, results)
    return results


def _run_one(name: str, demo: DemoFunction | Exception, out_dir: Path, *, device: str) -> DemoResult:
    package_dir = out_dir / name
    start = time.perf_counter()
    try:
        if isinstance(demo, Exception):
            raise demo
        package_dir.mkdir(exist_ok=True)
        items = _check_items(demo(package_dir, device=device), package_dir)
    except NotImplementedError as exc:
        if package_dir.is_dir() and not any(package_dir.iterdir()):
            package_dir.rmdir()  # leave no empty folder for a package without a demo
        return DemoResult(name, "no demo yet", message=str(exc), seconds=time.perf_counter() - start)
    except Exception as exc:
        package_dir.mkdir(exist_ok=True)
        trace_file = atomic_write_text(package_dir / "demo-error.txt", traceback.format_exc())
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return DemoResult(
            name,
            "failed",
            message=f"{type(exc).__name__}: {first_line}",
            seconds=time.perf_counter() - start,
            traceback_file=trace_file,
        )
    return DemoResult(name, "ok", items=items, seconds=time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------------
# index.html
# ----------------------------------------------------------------------------------------------------------

_TEXT_PREVIEW_CHARS = 6000
_TEXT_PREVIEW_LINES = {"text": 80, "csv": 15}
_VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".ogv": "video/ogg", ".mov": "video/quicktime"}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
section { border-top: 1px solid #ccc; padding-top: 0.5em; margin-top: 1.5em; }
.items { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0; max-width: 520px; }
figure img, figure video { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.6em; overflow: auto; max-height: 24em; font-size: 0.85em; }
.status { font-size: 0.8em; padding: 0.1em 0.5em; border-radius: 0.5em; background: #eee; }
.failed { background: #fdd; } .ok { background: #dfd; }
"""


def _href(path: Path, out_dir: Path) -> str:
    return urllib.parse.quote(path.resolve().relative_to(out_dir.resolve()).as_posix())


def _preview_text(path: Path, kind: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read(_TEXT_PREVIEW_CHARS)
    lines = text.splitlines()
    limit = _TEXT_PREVIEW_LINES[kind]
    shown = "\n".join(lines[:limit])
    if len(lines) > limit or len(text) == _TEXT_PREVIEW_CHARS:
        shown += "\n…"
    return shown


def _item_html(item: DemoItem, out_dir: Path) -> str:
    href = _href(item.path, out_dir)
    title = html.escape(item.title)
    if item.kind in ("image", "plot") or (item.kind == "video" and item.path.suffix.lower() == ".gif"):
        body = f'<img src="{href}" alt="{title}">'
    elif item.kind == "audio":
        body = f'<audio controls preload="none" src="{href}"></audio>'
    elif item.kind == "video":
        mime = _VIDEO_TYPES.get(item.path.suffix.lower(), "")
        body = f'<video controls preload="metadata"><source src="{href}" type="{mime}"></video>'
    elif item.kind in ("text", "csv"):
        body = f"<pre>{html.escape(_preview_text(item.path, item.kind))}</pre>"
    else:  # mesh, file
        size_kb = item.path.stat().st_size / 1024
        body = f'<a href="{href}" download>download {html.escape(item.path.name)}</a> ({size_kb:.1f} KB)'
    if item.kind == "csv":
        body += f'<br><a href="{href}" download>full CSV</a>'
    caption = f"<figcaption>{html.escape(item.caption)}</figcaption>" if item.caption else ""
    return f'<figure class="{item.kind}"><h3>{title}</h3>{body}{caption}</figure>'


def _section_html(result: DemoResult, out_dir: Path) -> str:
    status = html.escape(result.status)
    head = f'<h2>{html.escape(result.package)} <span class="status {status.replace(" ", "-")}">{status}</span></h2>'
    if result.status == "ok":
        body = "".join(_item_html(item, out_dir) for item in result.items) or "<p>(no outputs)</p>"
        body = f'<div class="items">{body}</div><p class="time">{result.seconds:.1f} s</p>'
    elif result.status == "no demo yet":
        body = "<p>This package has no demo yet.</p>"
    else:
        link = ""
        if result.traceback_file is not None:
            link = f' (<a href="{_href(result.traceback_file, out_dir)}">traceback</a>)'
        body = f"<p>The demo failed: <code>{html.escape(result.message)}</code>{link}</p>"
    return f'<section id="{html.escape(result.package)}">{head}{body}</section>'


def write_index_html(out_dir: str | Path, results: list[DemoResult]) -> Path:
    """Write `<out_dir>/index.html` showing every demo output, grouped per package, with relative links."""
    out_dir = Path(out_dir)
    sections = "\n".join(_section_html(result, out_dir) for result in results)
    summary = ", ".join(f"{r.package}: {r.status}" for r in results) or "no genloom packages with demos"
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>genloom demo</title><style>{_STYLE}</style></head><body>"
        f"<h1>genloom demo</h1><p>{html.escape(summary)}</p>\n{sections}\n</body></html>\n"
    )
    return atomic_write_text(out_dir / "index.html", page)


__all__ = [
    "DemoFunction",
    "DemoItem",
    "DemoKind",
    "DemoResult",
    "discover_demos",
    "run_demos",
    "write_index_html",
]
