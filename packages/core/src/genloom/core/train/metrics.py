"""Training telemetry: a JSONL metrics log and a rich progress bar (both only on the main process)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from genloom.core.io import atomic_write_text


class MetricsLog:
    """Appends one JSON object per logged step to `metrics.jsonl`; resuming drops entries past the resume step."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Keep only entries with `step <= step` (a crash after the last checkpoint leaves later ones)."""
        if self.path is None or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class ProgressBar:
    """A rich progress bar over optimizer steps showing the latest loss; a no-op when disabled."""

    def __init__(self, *, total: int, start: int, enabled: bool) -> None:
        self._progress = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]train[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task("", total=total, completed=start)
        self._progress.start()

    def update(self, step: int, description: str | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, description=description or "")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
