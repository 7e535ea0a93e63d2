"""Progress of a run at a terminal: a live line per running stage, a line per finished one.

Shown on stderr, only when it is a terminal and the command was not asked to be quiet,
so logs, pipes and cron mails stay clean. Lines carry file names, stage names, counts
and rates, nothing of the rows themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from batchbridge import progress


def amount(done: float, unit: str) -> str:
    """A count as people read it: 12.3 MB, 2,000,000 rows."""
    if unit == "bytes":
        return decimal(int(done))
    return f"{int(done):,} {unit}"


def rate(done: float, seconds: float, unit: str) -> str:
    """Units per second ('' when too quick to tell)."""
    if seconds < 0.05 or done <= 0:
        return ""
    per_second = done / seconds
    if unit == "bytes":
        return f"{decimal(int(per_second))}/s"
    return f"{per_second:,.0f} {unit}/s"


class _AmountColumn(ProgressColumn):
    """Done (of total) in the task's unit, and the rate so far."""

    def render(self, task: Task) -> Text:
        unit = str(task.fields.get("unit", "rows"))
        shown = amount(task.completed, unit)
        if task.total:
            shown += f" of {amount(task.total, unit)}"
        speed = rate(task.completed, task.elapsed or 0.0, unit)
        return Text(f"{shown}  {speed}".rstrip(), style="progress.download")


class TerminalProgress:
    """A `progress.ProgressListener` drawing on a rich console."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            _AmountColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._lock = threading.Lock()
        self._task: TaskID | None = None
        self._stage = ("", "", "rows", 0.0)

    def __enter__(self) -> TerminalProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def stage_started(self, file: str, stage: str, *, total: int | None, unit: str) -> None:
        with self._lock:
            self._stage = (file, stage, unit, time.perf_counter())
            self._task = self._progress.add_task(
                f"{stage:<10} {file}", total=total or None, unit=unit
            )

    def advanced(self, amount: int) -> None:
        with self._lock:
            if self._task is not None:
                self._progress.advance(self._task, amount)

    def stage_finished(self, *, done: int | None) -> None:
        with self._lock:
            if self._task is None:
                return
            file, stage, unit, started = self._stage
            seconds = time.perf_counter() - started
            task = self._progress.tasks[-1] if self._progress.tasks else None
            count = done if done is not None else (task.total or task.completed if task else 0)
            self._progress.remove_task(self._task)
            self._task = None
        parts = [f"{stage:<10} {file}", f"{seconds:.2f}s"]
        if count:
            parts.insert(1, amount(count, unit))
            speed = rate(count, seconds, unit)
            if speed:
                parts.append(f"({speed})")
        self._console.print("  ".join(parts), style="dim", highlight=False)


@contextmanager
def terminal_progress(enabled: bool, console: Console | None = None) -> Iterator[None]:
    """Show the pipeline's progress on stderr inside the block when `enabled`."""
    if not enabled:
        yield
        return
    display = TerminalProgress(console or Console(stderr=True))
    with display, progress.listening(display):
        yield
