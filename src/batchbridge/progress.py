"""Progress of long stages for whoever watches (the CLI's terminal display); silent by default.

The pipeline says when a stage of a file starts and ends and, where it streams, how much
it has done (bytes fetched, plaintext bytes decrypted). A listener installed with
`listening` turns that into a display; without one every call is a lookup and a return.
Only file names, stage names and counts pass through here, never row content.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressListener(Protocol):
    """What a display implements (cli/progress_display.py)."""

    def stage_started(self, file: str, stage: str, *, total: int | None, unit: str) -> None:
        """A stage of `file` began; `total` in `unit` (rows, bytes) when known."""

    def advanced(self, amount: int) -> None:
        """The current stage did `amount` more units."""

    def stage_finished(self, *, done: int | None) -> None:
        """The current stage ended; `done` units in all when known."""


_local = threading.local()
_listener: ProgressListener | None = None


@contextmanager
def listening(listener: ProgressListener | None) -> Iterator[None]:
    """Send this process's progress to `listener` inside the block (None: nobody)."""
    global _listener
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous


@contextmanager
def stage(file: str, name: str, *, total: int | None = None, unit: str = "rows") -> Iterator[None]:
    """Report a stage of a file from start to end (also when it fails)."""
    listener = _listener
    if listener is None:
        yield
        return
    listener.stage_started(file, name, total=total, unit=unit)
    _local.done = None
    try:
        yield
    finally:
        listener.stage_finished(done=getattr(_local, "done", None))


def advance(amount: int) -> None:
    """The running stage did `amount` more units (bytes or rows)."""
    listener = _listener
    if listener is not None:
        listener.advanced(amount)


def finished_with(done: int) -> None:
    """How many units the running stage did in all (known only at its end, e.g. rows read)."""
    if _listener is not None:
        _local.done = done
