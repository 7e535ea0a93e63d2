"""Runs and files as `batchbridge runs` shows them: filtered lists, one run's detail, id prefixes.

Pure functions over a Session returning dataclasses; the CLI only renders them. What
they return is ids, names, states, counts, rule names and timings: never row values.
A quarantine release run's counts are read in a nightly run's terms: rows_read = rows
taken from quarantine, rows_valid = released, rows_quarantined = still quarantined.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from batchbridge.errors import IdLookupError
from batchbridge.ledger.models import LedgerFile, Load, QuarantinedRow, Run, RunFile
from batchbridge.ledger.run_report import TargetCounts

MIN_PREFIX_DIGITS = 4
"""Fewest hex digits an id prefix needs: shorter ones match too much to be worth a query."""

MAX_CANDIDATES = 10
"""Matches an ambiguous prefix lists; the rest are counted."""

NIGHTLY_KIND = "nightly"
RELEASE_KIND = "quarantine_release"
"""The `kind` steward.release_report stores in a release run's report (a test pins it)."""

ID_TEXT = re.compile(r"[0-9a-f-]+")
"""What an id (or a prefix of one) is made of: lowercase hex digits and dashes."""


def as_utc(moment: datetime) -> datetime:
    """An aware UTC time (SQLite returns the ledger's UTC times without their offset)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def local_minute(moment: datetime | None) -> str:
    """`YYYY-MM-DD HH:MM` in this machine's zone ("-" when unknown)."""
    return "-" if moment is None else as_utc(moment).astimezone().strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class IdCandidate:
    """A run or ledger file an id prefix matched."""

    kind: str  # "run" or "file"
    id: str
    tenant: str
    feed: str
    at: datetime  # the run's start, or the file's first sighting


def id_prefix(text: str) -> str:
    """The lowercase prefix in `text`, or IdLookupError when it cannot be an id prefix.

    The value is not echoed when refused: a mistyped id may be pasted patient data.
    """
    prefix = text.strip().lower()
    if not ID_TEXT.fullmatch(prefix) or len(prefix.replace("-", "")) < MIN_PREFIX_DIGITS:
        raise IdLookupError(
            f"an id or id prefix is at least {MIN_PREFIX_DIGITS} hex digits (0-9, a-f, dashes "
            "as in the full id); the value given is not",
            reason="id_invalid",
        )
    return prefix


def _matches(
    session: Session, kind: str, prefix: str, tenants: Collection[str] | None
) -> tuple[list[IdCandidate], int]:
    """Up to MAX_CANDIDATES + 1 runs or files whose id starts with `prefix`, and how many."""
    model: type[Run] | type[LedgerFile] = Run if kind == "run" else LedgerFile
    at = Run.started_at if kind == "run" else LedgerFile.first_seen_at
    # `prefix` holds only [0-9a-f-] (id_prefix): nothing in it is a LIKE wildcard.
    where = [model.id.like(f"{prefix}%")]
    if tenants is not None:
        where.append(model.tenant.in_(list(tenants)))
    query = select(model.id, model.tenant, model.feed, at).where(*where)
    rows = session.execute(query.order_by(at.desc()).limit(MAX_CANDIDATES + 1)).all()
    found = [IdCandidate(kind, i, t, f, a) for i, t, f, a in rows]
    if len(found) <= MAX_CANDIDATES:
        return found, len(found)
    return found, int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def resolve(
    session: Session,
    text: str,
    *,
    kinds: Collection[str] = ("run", "file"),
    tenants: Collection[str] | None = None,
) -> IdCandidate:
    """The one run or file `text` (a full id or a unique prefix) names, else IdLookupError.

    `tenants` limits the search (a steward's tenants): other tenants' ids are not found.
    """
    prefix = id_prefix(text)
    found: list[IdCandidate] = []
    total = 0
    for kind in [k for k in ("run", "file") if k in kinds]:
        matched, count = _matches(session, kind, prefix, tenants)
        found, total = found + matched, total + count
    what = " or ".join({"run": "run", "file": "ledger file"}[k] for k in kinds)
    if total == 0:
        raise IdLookupError(f"no {what} id starts with {prefix}", reason="id_unknown")
    if total == 1:
        return found[0]
    listed = [
        f"{c.kind:<4} {c.id}  {c.tenant}/{c.feed}  "
        f"{'started' if c.kind == 'run' else 'first seen'} {local_minute(c.at)}"
        for c in sorted(found, key=lambda c: as_utc(c.at), reverse=True)[:MAX_CANDIDATES]
    ]
    if total > len(listed):
        listed.append(f"... and {total - len(listed)} more")
    raise IdLookupError(
        f"{prefix} matches {total} {what} ids: give more of the id\n" + "\n".join(listed),
        reason="id_ambiguous",
    )


def resolve_run_id(session: Session, prefix: str, *, tenants: Collection[str] | None = None) -> str:
    """The run id `prefix` (>= 4 hex digits, or the full id) names; IdLookupError otherwise."""
    return resolve(session, prefix, kinds=("run",), tenants=tenants).id


def resolve_file_id(
    session: Session, prefix: str, *, tenants: Collection[str] | None = None
) -> str:
    """The ledger file id `prefix` (>= 4 hex digits, or the full id) names; as resolve_run_id."""
    return resolve(session, prefix, kinds=("file",), tenants=tenants).id


@dataclass(frozen=True)
class RunFilter:
    """Which runs `runs list` shows; None means any."""

    feed: str | None = None
    tenant: str | None = None
    status: str | None = None
    since: datetime | None = None
    limit: int = 20


ROW_COUNTS = ("rows_read", "rows_valid", "rows_quarantined")
COUNT_KEYS = ("files_reconciled", "files_failed", "files_skipped", *ROW_COUNTS)
"""The counts of a run's list line, in the order they are shown."""


@dataclass(frozen=True)
class RunSummary:
    """One run in a list; `counts` by COUNT_KEYS, None while unknown (no report stored yet)."""

    id: str
    tenant: str
    feed: str
    status: str
    kind: str
    is_rerun: bool
    flow_run_id: str | None
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, int | None] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None  # still running, or it died before closing the run
        return (as_utc(self.finished_at) - as_utc(self.started_at)).total_seconds()


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def summarize(run: Run, outcomes: Mapping[str, int] | None = None) -> RunSummary:
    """A run's list line from its stored report (or its run_files' outcomes when none yet)."""
    report: dict[str, Any] = dict(run.report or {})
    kind = str(report.get("kind") or NIGHTLY_KIND)
    totals: dict[str, Any] = dict(report.get("totals") or {})
    counts: dict[str, int | None]
    if kind == RELEASE_KIND:
        files = report.get("files") or []
        # In a list line's terms: read = taken from quarantine, valid = released.
        names = ("selected", "released", "still_quarantined")
        counts = {key: _int(totals.get(name)) for key, name in zip(ROW_COUNTS, names, strict=True)}
        counts |= {
            "files_reconciled": sum(f.get("failed_stage") is None for f in files),
            "files_failed": _int(totals.get("files_failed")),
            "files_skipped": 0,
        }
    elif totals:
        counts = {key: _int(totals.get(key)) for key in COUNT_KEYS}
    else:  # no report yet: what its run_files say so far
        found = dict(outcomes or {})
        counts = {f"files_{k}": found.get(k, 0) for k in ("reconciled", "failed")} if found else {}
    columns = ("id", "tenant", "feed", "status", "flow_run_id", "started_at", "finished_at")
    return RunSummary(
        **{c: getattr(run, c) for c in columns},
        kind=kind,
        is_rerun=bool(run.is_rerun),
        counts=counts,
    )


def list_runs(session: Session, where: RunFilter) -> list[RunSummary]:
    """Runs matching every filter, newest first, at most `where.limit`."""
    query = select(Run).order_by(Run.started_at.desc(), Run.id).limit(where.limit)
    for column, wanted in (
        (Run.feed, where.feed),
        (Run.tenant, where.tenant),
        (Run.status, where.status),
    ):
        if wanted is not None:
            query = query.where(column == wanted)
    if where.since is not None:
        # UTC: SQLite keeps the ledger's UTC times without their offset.
        query = query.where(Run.started_at >= where.since.astimezone(UTC))
    runs = list(session.scalars(query))
    open_ids = [r.id for r in runs if not (r.report or {}).get("totals")]
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    if open_ids:
        for run_id, outcome, count in session.execute(
            select(RunFile.run_id, RunFile.outcome, func.count())
            .where(RunFile.run_id.in_(open_ids))
            .group_by(RunFile.run_id, RunFile.outcome)
        ):
            outcomes[run_id][outcome] = count
    return [summarize(run, outcomes.get(run.id)) for run in runs]


@dataclass
class TargetDetail(TargetCounts):
    """What one target did with one file's rows in this run (the ledger's load row)."""

    target: str = ""
    seconds: float | None = None
    load_id: str | None = None


@dataclass(frozen=True)
class FileDetail:
    """One file in one run: how far it got (or where and why it failed), counts, timings."""

    name: str
    file_id: str | None
    outcome: str
    is_rerun: bool = False
    stage: str | None = None
    """The failed stage when outcome is "failed", else the last stage reached."""
    reason: str | None = None
    message: str | None = None
    rows_read: int | None = None
    rows_declared: int | None = None
    rows_valid: int | None = None
    rows_quarantined: int | None = None
    balanced: bool | None = None
    state_now: str | None = None
    """The ledger file's state today (a later run may have taken it further)."""
    targets: list[TargetDetail] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunDetail:
    """One run: its list line, its files, and what its report says about the whole run."""

    run: RunSummary
    files: list[FileDetail]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    requested_by: str | None = None


_FILE_KEYS = frozenset(FileDetail.__dataclass_fields__) - {"targets", "state_now"}
_RELEASE_FILE_KEYS = {
    "file_name": "name",
    "selected": "rows_read",
    "released": "rows_valid",
    "still_quarantined": "rows_quarantined",
    "new_reasons": "quarantine_reasons",
}


def _reported(entry: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A stored report's file entry in FileDetail's terms."""
    found = {
        _RELEASE_FILE_KEYS.get(k, k) if kind == RELEASE_KIND else k: v for k, v in entry.items()
    }
    if kind == RELEASE_KIND:
        found.update(outcome="failed" if found.get("failed_stage") else "released", is_rerun=True)
    failed = found.get("outcome") == "failed"
    found["stage"] = found.get("failed_stage") if failed else found.get("outcome")
    return {k: v for k, v in found.items() if k in _FILE_KEYS}


def _unreported(file: LedgerFile, run_id: str) -> dict[str, Any]:
    """What the ledger row says of a file the run has not reported (running, or it died)."""
    found: dict[str, Any] = {"name": file.name, "file_id": file.id, "outcome": "?"}
    # The row's state is this run's only while this run is the last to have touched it.
    if file.last_run_id == run_id:
        failed = file.state == "failed"
        found.update(
            outcome="failed" if failed else "unfinished",
            stage=file.failed_stage if failed else file.state,
            reason=file.failure_reason,
            message=file.failure_message,
            **{k: getattr(file, k) for k in (*ROW_COUNTS, "rows_declared")},
        )
    return found


_LOAD_COUNTS = ("sent", "inserted", "updated", "unchanged", "rejected", "confirmed", "inactivated")


def _targets(reported: Mapping[str, Any], loads: list[Load]) -> list[TargetDetail]:
    found = {
        name: TargetDetail(target=name, **{k: v for k, v in counts.items() if k != "target"})
        for name, counts in reported.items()
    }
    for load in sorted(loads, key=lambda x: as_utc(x.finished_at)):
        # The ledger's load row is what the target confirmed: it wins over the report.
        kept = found[load.target].rejection_reasons if load.target in found else {}
        found[load.target] = TargetDetail(
            **{k: getattr(load, f"rows_{k}") for k in _LOAD_COUNTS},
            rejection_reasons=dict(kept),
            target=load.target,
            seconds=load.seconds,
            load_id=load.id,
        )
    return list(found.values())


def _reasons_quarantined_by(session: Session, run_id: str) -> dict[str, dict[str, int]]:
    """Reason counts of the rows a run quarantined, per file (for a run with no report)."""
    counted: dict[str, Counter[str]] = defaultdict(Counter)
    query = select(QuarantinedRow.file_id, QuarantinedRow.reasons)
    for file_id, reasons in session.execute(query.where(QuarantinedRow.run_id == run_id)):
        counted[file_id].update(reasons)
    return {file_id: dict(sorted(c.items())) for file_id, c in counted.items()}


def run_detail(session: Session, run_id: str) -> RunDetail | None:
    """Everything the ledger knows about one run (None: no run has this full id)."""
    run = session.get(Run, run_id)
    if run is None:
        return None
    report: dict[str, Any] = dict(run.report or {})
    summary = summarize(run)
    stored = list(report.get("files") or [])
    run_files = {
        rf.file_id: rf for rf in session.scalars(select(RunFile).where(RunFile.run_id == run_id))
    }
    file_ids = sorted({f["file_id"] for f in stored if f.get("file_id")} | set(run_files))
    files = {
        f.id: f for f in session.scalars(select(LedgerFile).where(LedgerFile.id.in_(file_ids)))
    }
    loads: dict[str, list[Load]] = defaultdict(list)
    for load in session.scalars(select(Load).where(Load.run_id == run_id)):
        loads[load.file_id].append(load)
    entries = [(_reported(f, summary.kind), dict(f.get("targets") or {})) for f in stored]
    reported = {entry["file_id"] for entry, _ in entries}
    unreported = [i for i in file_ids if i not in reported and i in files]
    entries += [(_unreported(files[i], run_id), {}) for i in unreported]
    reasons = _reasons_quarantined_by(session, run_id) if unreported else {}
    details: list[FileDetail] = []
    for entry, targets in entries:
        file_id = entry.get("file_id") or ""
        seconds = dict(entry.pop("stage_seconds", None) or {})
        if (run_file := run_files.get(file_id)) is not None:
            seconds.update(run_file.stage_seconds or {})
            entry["is_rerun"] = bool(run_file.is_rerun or entry.get("is_rerun"))
        if file_id in unreported:
            entry["quarantine_reasons"] = reasons.get(file_id, {})
        details.append(
            FileDetail(
                **entry,
                state_now=files[file_id].state if file_id in files else None,
                targets=_targets(targets, loads.get(file_id, [])),
                stage_seconds=seconds,
            )
        )
    kept = {k: report[k] for k in ("skipped", "notes", "error", "requested_by") if report.get(k)}
    return RunDetail(run=summary, files=details, **kept)
