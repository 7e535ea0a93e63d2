"""Reliability suites: shared figures, printed at the end of the run.

Each suite adds to `reliability_figures` (e.g. figures.add("kill_points", 20)); the
terminal summary prints them. `BATCHBRIDGE_RELIABILITY=full` (set by
`make test-reliability`) runs the full suites; otherwise a quick subset runs in
`make test`.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

import pytest

FULL = os.environ.get("BATCHBRIDGE_RELIABILITY") == "full"

# The figures every suite reports, printed even when zero (zero is the point for some).
REPORTED = (
    "kill_points",
    "kill_cycles",
    "faults_injected",
    "hostile_inputs",
    "unhandled_errors",
    "rows_lost",
    "rows_doubled",
    "canary_hits",
)


class Figures:
    """Thread-safe counters shared by every reliability test of the session."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {name: self._counts.get(name, 0) for name in (*REPORTED, *self._counts)}


_FIGURES = Figures()


@pytest.fixture(scope="session")
def reliability_figures() -> Figures:
    """The session's reliability counters."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    figures = _FIGURES.snapshot()
    if not any(figures.values()):
        return
    mode = "full" if FULL else "quick"
    terminalreporter.section(f"reliability figures ({mode})")
    for name, value in figures.items():
        terminalreporter.write_line(f"{name:<20} {value}")
