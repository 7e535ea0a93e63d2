"""Reliability suites: shared figures, printed at the end of the run; Hypothesis profiles.

Each suite adds to `reliability_figures` (e.g. figures.add("kill_points", 20)); the
terminal summary prints them. `BATCHBRIDGE_RELIABILITY=full` (set by
`make test-reliability`) runs the full suites; otherwise a quick subset runs in
`make test`. The generated (Hypothesis) tests take their settings from
`hostile_settings`, built on the one profile of the mode.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings

FULL = os.environ.get("BATCHBRIDGE_RELIABILITY") == "full"

QUICK_PROFILE = "batchbridge-reliability-quick"
FULL_PROFILE = "batchbridge-reliability-full"
# Registered, not loaded: loading would change the defaults of every other suite in the
# session (the unit tests use Hypothesis too). Each generated test asks for its settings.
for _name, _full in ((QUICK_PROFILE, False), (FULL_PROFILE, True)):
    settings.register_profile(
        _name,
        max_examples=3000 if _full else 150,
        deadline=None,
        database=None,  # nothing written into the work tree
        derandomize=not _full,  # the quick run in `make test` is the same every time
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
PROFILE = settings.get_profile(FULL_PROFILE if FULL else QUICK_PROFILE)


def hostile_settings(*, quick: int, full: int) -> settings:
    """The mode's profile, generating `quick` (or, in full mode, `full`) examples a test."""
    return settings(PROFILE, max_examples=full if FULL else quick)


# Background threads of the session (Prefect's workers, paramiko) may draw from the global
# `random` while Hypothesis generates an example; Hypothesis then blames the strategy.
RANDOM_IN_OTHER_THREADS = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

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
