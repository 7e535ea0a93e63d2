"""Named kill -9 points for the crash suite; inert in production (the variables are unset).

The reliability suite (tests/reliability/test_crash_points.py) runs the CLI with
`BATCHBRIDGE_CRASH_TESTING=1` and `BATCHBRIDGE_CRASH_AT=<point>` (or `<point>@N`: the
N-th time that point is reached in the process). When the named point is reached the
process sends itself SIGKILL: no exception, no `finally`, no atexit, no flushed buffers,
exactly what an OOM kill or a pulled plug does. Then the suite reruns without the
variables and checks that nothing was lost or doubled.

With `BATCHBRIDGE_CRASH_TRACE=<file>` (also only under the testing switch) every point
reached is appended to that file, one name a line: a clean run's trace tells the suite
which points a run reaches and how often, so no planned kill silently misses.

The variables are read once, at import. Without the testing switch `crash_point` is a
single global lookup and a `return`: nothing to configure away in production, and a
stray `BATCHBRIDGE_CRASH_AT` on a worker (without the switch) is ignored.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

CRASH_AT_ENV = "BATCHBRIDGE_CRASH_AT"
CRASH_TESTING_ENV = "BATCHBRIDGE_CRASH_TESTING"
CRASH_TRACE_ENV = "BATCHBRIDGE_CRASH_TRACE"

CRASH_POINTS: tuple[str, ...] = (
    # nightly run, in pipeline order (flows/nightly.py unless noted)
    "after_discover",
    "after_claim",
    "mid_download",  # connectors/sources/sftp.py: a chunk staged, the download not committed
    "after_download",
    "after_fetch_ledger",
    "mid_decrypt",  # connectors/decryptors/gnupg.py: plaintext partly read from gpg
    "after_decrypt",
    "after_verify_ledger",
    "after_parse",  # validations/stream.py: a chunk parsed, not yet validated
    "mid_stream",  # validations/stream.py: a chunk validated and transformed, more to come
    # connectors/targets/early_stage.py, in its COPY thread while the file still streams:
    "before_early_copy",  # the early stage made in an open transaction, COPY not started
    "mid_early_copy",  # a chunk's batch COPYed into the early stage, the file not yet judged
    "after_validate",
    "mid_quarantine_write",  # ledger/store.py: rows inserted, transaction not committed
    "after_quarantine_commit",
    "after_validated_ledger",
    "after_transform",
    # The next two: loads that COPY from the chunks (a release; a load whose early stage
    # failed), not a streamed file's load, which upserts from its early stage.
    "before_copy",  # connectors/targets/postgres.py: staging table made, COPY not started
    "mid_copy",  # connectors/targets/postgres.py: a COPY batch sent, COPY not finished
    "after_copy_before_upsert",  # connectors/targets/postgres.py
    "after_upsert_before_commit",  # connectors/targets/postgres.py: upserted and confirmed
    "after_target_commit_before_ledger",  # tasks/load.py: committed, load not recorded
    "mid_load_record",  # ledger/store.py: the Load row written, not committed
    "after_load_ledger",
    "mid_ledger_advance",  # ledger/store.py: a file's new state written, not committed
    "before_reconcile",
    "after_reconcile_before_ledger",
    "after_reconcile_before_archive",
    "after_archive",
    "after_file",
    "during_report",  # before the run's report is stored (finish_run)
    "after_report",  # report stored, artifact not yet published
    "mid_artifact",  # tasks/report.py: table artifact made, markdown artifact not
    # steward release (flows/steward_release.py)
    "mid_release",  # rows committed to the targets, not yet marked released
    "mid_release_settle",  # released marks + audit event written, not committed
    "release_before_report",  # settled, the release run's report not stored
)
"""Every point placed in the code (the suite checks each name appears exactly once)."""


@dataclass(frozen=True)
class CrashSpec:
    """Which point kills the process, and on which arrival there (1 = the first)."""

    point: str
    occurrence: int = 1


def parse_crash_spec(value: str | None) -> CrashSpec | None:
    """`point` or `point@N` -> CrashSpec; None for unset/empty. ValueError when malformed."""
    if value is None or not value.strip():
        return None
    point, _, count = value.strip().partition("@")
    occurrence = int(count) if count else 1
    if not point or occurrence < 1:
        raise ValueError(f"{CRASH_AT_ENV} must be 'point' or 'point@N' with N >= 1")
    return CrashSpec(point=point, occurrence=occurrence)


def _spec_from_env() -> CrashSpec | None:
    if os.environ.get(CRASH_TESTING_ENV) != "1":
        return None
    return parse_crash_spec(os.environ.get(CRASH_AT_ENV))


def _trace_from_env() -> str | None:
    if os.environ.get(CRASH_TESTING_ENV) != "1":
        return None
    return os.environ.get(CRASH_TRACE_ENV) or None


_SPEC = _spec_from_env()
_TRACE = _trace_from_env()
_ACTIVE = _SPEC is not None or _TRACE is not None
_arrivals = 0
_arrivals_lock = threading.Lock()


def crash_point(name: str, before_kill: Callable[[], object] | None = None) -> None:
    """Kill this process with SIGKILL if the crash suite named this point; otherwise nothing.

    `before_kill` runs only when the process is about to die: e.g. a session's flush, so
    that the kill lands with the statement sent to the database but not committed.
    """
    if not _ACTIVE:
        return
    _arrive(name, before_kill)


def _arrive(name: str, before_kill: Callable[[], object] | None) -> None:
    global _arrivals
    if _TRACE is not None:
        # One short O_APPEND write per arrival: lines from threads never interleave.
        fd = os.open(_TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{name}\n".encode())
        finally:
            os.close(fd)
    if _SPEC is None or name != _SPEC.point:
        return
    # Prefect may run stages in worker threads: count arrivals exactly once each.
    with _arrivals_lock:
        _arrivals += 1
        arrived = _arrivals
    if arrived == _SPEC.occurrence:
        if before_kill is not None:
            before_kill()
        os.kill(os.getpid(), signal.SIGKILL)
