"""Count checks of a run: every file reconciled and balanced, target counts, the warehouse itself.

A run's counts must balance whatever the timings: rows read = valid + quarantined =
the trailer's count; the warehouse target inserted (first run) or left unchanged
(rerun) every valid row and confirmed them all; the table holds exactly the valid
rows. `WarehouseState` is the table's fingerprint, to prove a rerun rewrote nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TABLE = "lab_result"


@dataclass(frozen=True)
class FileExpectation:
    """A file a run must process: its name, rows and the rows it must quarantine."""

    name: str
    rows: int
    quarantined: int

    @property
    def valid(self) -> int:
        return self.rows - self.quarantined


@dataclass
class RunFigures:
    """One run's figures (from the pipeline child) and the problems its counts showed."""

    label: str
    child: dict[str, Any]
    warehouse_rows: int = 0
    stream_s: float | None = None  # wall seconds of the stream task runs (Prefect API)
    rss_by_task: dict[str, float] = field(default_factory=dict)  # sampled peak MiB per task
    problems: list[str] = field(default_factory=list)

    @property
    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = self.child.get("report") or {}
        return report

    @property
    def files(self) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = self.report.get("files") or []
        return files

    @property
    def file(self) -> dict[str, Any]:
        """The first file's report (the single file of the main case)."""
        return self.files[0] if self.files else {}

    @property
    def flow_s(self) -> float:
        seconds: float = self.child["flow_s"]
        return seconds

    @property
    def peak_rss_mib(self) -> float:
        mib: float = self.child["peak_rss_mib"]
        return mib

    def stage_seconds(self) -> dict[str, float]:
        """Each stage's seconds summed over the run's files."""
        total: dict[str, float] = {}
        for file in self.files:
            for stage, seconds in (file.get("stage_seconds") or {}).items():
                total[stage] = total.get(stage, 0.0) + seconds
        return total


def check_run(figures: RunFigures, expected: list[FileExpectation], *, rerun: bool) -> None:
    """Append every count that does not balance to `figures.problems`."""
    problems = figures.problems
    report = figures.report
    if not report:
        problems.append("no run report in the ledger")
        return
    if report.get("status") != "succeeded":
        problems.append(f"run status {report.get('status')!r} ({report.get('error')})")
    if figures.child.get("flow_state") != "COMPLETED":
        problems.append(f"flow state {figures.child.get('flow_state')}")
    by_name = {file.get("name"): file for file in figures.files}
    names = sorted(by_name, key=str)
    if names != sorted(spec.name for spec in expected):
        problems.append(f"expected files {[s.name for s in expected]}, got {names}")
    for spec in expected:
        file = by_name.get(spec.name)
        if file is not None:
            _check_file(problems, spec, file, rerun=rerun)
    valid = sum(spec.valid for spec in expected)
    if figures.warehouse_rows != valid:
        problems.append(f"warehouse table holds {figures.warehouse_rows} rows, expected {valid}")


def _check_file(
    problems: list[str], spec: FileExpectation, file: dict[str, Any], *, rerun: bool
) -> None:
    where = spec.name
    if file.get("outcome") != "reconciled" or file.get("balanced") is not True:
        problems.append(
            f"{where}: outcome {file.get('outcome')} balanced={file.get('balanced')} "
            f"(failed at {file.get('failed_stage')}: {file.get('reason')} {file.get('message')})"
        )
    expected = {
        "rows_read": spec.rows,
        "rows_declared": spec.rows,
        "rows_valid": spec.valid,
        "rows_quarantined": spec.quarantined,
    }
    for key, want in expected.items():
        if file.get(key) != want:
            problems.append(f"{where}: {key} {file.get(key)} != {want}")
    if bool(file.get("is_rerun")) != rerun:
        problems.append(f"{where}: is_rerun {file.get('is_rerun')} != {rerun}")
    counts = (file.get("targets") or {}).get("warehouse")
    if counts is None:
        problems.append(f"{where}: no counts for target warehouse")
        return
    want_counts = {
        "sent": spec.valid,
        "inserted": 0 if rerun else spec.valid,
        "updated": 0,
        "unchanged": spec.valid if rerun else 0,
        "rejected": 0,
        "confirmed": spec.valid,
    }
    for key, want in want_counts.items():
        if counts.get(key) != want:
            problems.append(f"{where}: warehouse {key} {counts.get(key)} != {want}")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def warehouse_rows(url: str, tenant: str) -> int:
    """Rows of `tenant` in the warehouse table (0 when it does not exist yet)."""
    import psycopg

    with psycopg.connect(_libpq(url)) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
        if exists is None or exists[0] is None:
            return 0
        row = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE tenant = %s", (tenant,))  # noqa: S608
        found = row.fetchone()
        return int(found[0]) if found else 0


@dataclass(frozen=True)
class WarehouseState:
    """The tenant's rows: how many, a digest of every column of every row, who wrote them.

    `writers` counts rows per writing transaction (xmin): a row rewritten, even with the
    same values, gets a new one.
    """

    rows: int
    digest: str
    writers: tuple[tuple[str, int], ...]


def warehouse_state(url: str, tenant: str) -> WarehouseState:
    """The fingerprint of `tenant`'s rows in the warehouse table."""
    import psycopg

    with psycopg.connect(_libpq(url)) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
        if exists is None or exists[0] is None:
            return WarehouseState(0, "", ())
        found = conn.execute(
            f"SELECT count(*), md5(string_agg(md5(t::text), '' ORDER BY t.record_id)) "  # noqa: S608
            f"FROM {TABLE} AS t WHERE t.tenant = %s",
            (tenant,),
        ).fetchone()
        writers = conn.execute(
            f"SELECT xmin::text, count(*) FROM {TABLE} WHERE tenant = %s GROUP BY 1 ORDER BY 1",  # noqa: S608
            (tenant,),
        ).fetchall()
    rows, digest = found if found else (0, "")
    return WarehouseState(int(rows), str(digest or ""), tuple((str(x), int(n)) for x, n in writers))


def rewritten_rows(before: WarehouseState, after: WarehouseState) -> int:
    """Rows whose writing transaction changed between two states (0: none was rewritten)."""
    kept = dict(before.writers)
    return sum(n - min(n, kept.get(xmin, 0)) for xmin, n in after.writers)
