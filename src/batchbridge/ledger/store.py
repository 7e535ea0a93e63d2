"""The ledger store: the only code that reads and writes run, file, load and quarantine rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from batchbridge.crashpoints import crash_point
from batchbridge.errors import BatchbridgeError
from batchbridge.ledger.crypto import EncryptedRow
from batchbridge.ledger.migrate import create_ledger_engine
from batchbridge.ledger.models import (
    FileState,
    LedgerFile,
    Load,
    QuarantinedRow,
    QuarantineStatus,
    Run,
    RunFile,
    RunStatus,
    TargetRejection,
    utcnow,
)


@dataclass(frozen=True)
class FileClaim:
    """A file this run will process; `is_rerun` when the ledger had seen it before."""

    file_id: str
    name: str
    size: int
    is_rerun: bool


@dataclass(frozen=True)
class QuarantineEntry:
    """One row to quarantine: its number in the file, its reasons, its encrypted payload."""

    row_number: int
    reasons: Sequence[str]
    encrypted: EncryptedRow
    record_hash: str | None = None
    """Keyed hash of the row's record id (blind index for exact search); None when blank."""


@dataclass(frozen=True)
class LoadRecord:
    """Counts of one load as the target confirmed them."""

    target: str
    load_id: str
    rows_sent: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    rows_rejected: int
    rows_confirmed: int
    seconds: float
    rows_inactivated: int = 0
    rejections: tuple[tuple[int, str], ...] = ()
    """(row number, reason code) of each row the target refused."""


class LedgerStore:
    """Reads and writes ledger rows; each method is its own short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> LedgerStore:
        """Open (and migrate) the ledger at `url`, creating it (and a SQLite file's folder)."""
        return cls(create_ledger_engine(url))

    @classmethod
    def open_existing(cls, url: str) -> LedgerStore:
        """Open (and migrate) the ledger at `url`; LedgerNotFoundError when there is none.

        For commands that read a ledger: a wrong URL must fail naming it, not answer from
        a fresh empty ledger. Creates nothing.
        """
        return cls(create_ledger_engine(url, create=False))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self._sessions.begin() as session:
            yield session

    # runs -------------------------------------------------------------------------------

    def start_run(
        self, *, tenant: str, feed: str, flow_run_id: str | None, is_rerun: bool = False
    ) -> str:
        """Record a new run and return its id."""
        run_id = str(uuid.uuid4())
        with self.session() as s:
            s.add(
                Run(
                    id=run_id,
                    tenant=tenant,
                    feed=feed,
                    flow_run_id=flow_run_id,
                    is_rerun=is_rerun,
                    status=RunStatus.RUNNING,
                )
            )
        return run_id

    def finish_run(self, run_id: str, *, status: RunStatus, report: dict[str, Any]) -> None:
        """Close a run with its status and its (PHI-free) report."""
        with self.session() as s:
            run = s.get_one(Run, run_id)
            run.status = status
            run.finished_at = utcnow()
            run.report = report

    def run_for_flow_run(self, flow_run_id: str) -> Run | None:
        """The ledger run a Prefect flow run recorded."""
        with self.session() as s:
            return s.scalars(
                select(Run).where(Run.flow_run_id == flow_run_id).order_by(Run.started_at.desc())
            ).first()

    def get_run(self, run_id: str) -> Run | None:
        """A run by id."""
        with self.session() as s:
            return s.get(Run, run_id)

    # files ------------------------------------------------------------------------------

    def is_done(
        self, *, tenant: str, feed: str, name: str, size: int, sha256: str | None = None
    ) -> bool:
        """Whether a file with this name and size (and sha256, when given) was reconciled."""
        query = (
            select(func.count())
            .select_from(LedgerFile)
            .where(
                LedgerFile.tenant == tenant,
                LedgerFile.feed == feed,
                LedgerFile.name == name,
                LedgerFile.size == size,
                LedgerFile.state == FileState.RECONCILED,
            )
        )
        if sha256 is not None:
            query = query.where(LedgerFile.sha256 == sha256)
        with self.session() as s:
            found = s.scalar(query)
        return bool(found)

    def claim_file(
        self, *, run_id: str, tenant: str, feed: str, name: str, size: int, force: bool
    ) -> FileClaim | None:
        """Get or create the ledger row this run processes for a remote file.

        A file already reconciled is skipped (None) unless `force`; an unfinished or failed
        row for the same name and size is reused, so a rerun continues its history.
        """
        with self.session() as s:
            rows = s.scalars(
                select(LedgerFile)
                .where(
                    LedgerFile.tenant == tenant,
                    LedgerFile.feed == feed,
                    LedgerFile.name == name,
                    LedgerFile.size == size,
                )
                .order_by(LedgerFile.first_seen_at.desc())
            ).all()
            done = [r for r in rows if r.state == FileState.RECONCILED]
            open_rows = [r for r in rows if r.state != FileState.RECONCILED]
            if done and not force:
                return None
            row = open_rows[0] if open_rows else (done[0] if done else None)
            if row is None:
                row = LedgerFile(
                    id=str(uuid.uuid4()), tenant=tenant, feed=feed, name=name, size=size
                )
                s.add(row)
                is_rerun = False
            else:
                is_rerun = True
            row.state = FileState.DISCOVERED
            row.failed_stage = None
            row.failure_reason = None
            row.failure_message = None
            row.attempts = (row.attempts or 0) + 1
            row.last_run_id = run_id
            return FileClaim(file_id=row.id, name=name, size=size, is_rerun=is_rerun)

    def reconciled_file_names(self, *, tenant: str, feed: str) -> list[str]:
        """Names of every file of the feed that reached reconciled (any run)."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(LedgerFile.name)
                    .where(
                        LedgerFile.tenant == tenant,
                        LedgerFile.feed == feed,
                        LedgerFile.state == FileState.RECONCILED,
                    )
                    .distinct()
                )
            )

    def get_file(self, file_id: str) -> LedgerFile:
        """A ledger file row by id."""
        with self.session() as s:
            return s.get_one(LedgerFile, file_id)

    def advance_file(self, file_id: str, state: FileState, **fields: Any) -> None:
        """Move a file to `state`, setting counts or facts learned at that stage."""
        with self.session() as s:
            row = s.get_one(LedgerFile, file_id)
            row.state = state
            for key, value in fields.items():
                if not hasattr(LedgerFile, key):
                    raise BatchbridgeError(f"ledger file has no field {key!r}")
                setattr(row, key, value)
            if state == FileState.RECONCILED:
                row.reconciled_at = utcnow()
            crash_point("mid_ledger_advance", s.flush)

    def fail_file(self, file_id: str, *, stage: str, reason: str, message: str) -> None:
        """Mark a file failed at `stage`; it stays unfinished so the next run retries it."""
        with self.session() as s:
            row = s.get_one(LedgerFile, file_id)
            row.state = FileState.FAILED
            row.failed_stage = stage
            row.failure_reason = reason
            row.failure_message = message[:2000]

    def record_run_file(
        self,
        *,
        run_id: str,
        file_id: str,
        outcome: str,
        is_rerun: bool,
        stage_seconds: dict[str, float],
    ) -> None:
        """Record what this run did with a file."""
        with self.session() as s:
            s.merge(
                RunFile(
                    run_id=run_id,
                    file_id=file_id,
                    outcome=outcome,
                    is_rerun=is_rerun,
                    stage_seconds=stage_seconds,
                )
            )

    # quarantine -------------------------------------------------------------------------

    def save_quarantine(
        self,
        *,
        tenant: str,
        feed: str,
        file_id: str,
        run_id: str,
        entries: Sequence[QuarantineEntry],
    ) -> int:
        """Store a file's quarantined rows, replacing ones a previous attempt stored.

        Rows a steward already released or discarded are kept as they are, so a rerun
        never re-quarantines a settled row. Returns the rows now quarantined for the file.
        """
        with self.session() as s:
            settled = set(
                s.scalars(
                    select(QuarantinedRow.row_number).where(
                        QuarantinedRow.file_id == file_id,
                        QuarantinedRow.status != QuarantineStatus.QUARANTINED,
                    )
                )
            )
            s.execute(
                delete(QuarantinedRow).where(
                    QuarantinedRow.file_id == file_id,
                    QuarantinedRow.status == QuarantineStatus.QUARANTINED,
                )
            )
            rows = [
                {
                    "tenant": tenant,
                    "feed": feed,
                    "file_id": file_id,
                    "run_id": run_id,
                    "row_number": entry.row_number,
                    "reasons": list(entry.reasons),
                    "status": QuarantineStatus.QUARANTINED.value,
                    "key_id": entry.encrypted.key_id,
                    "nonce": entry.encrypted.nonce,
                    "ciphertext": entry.encrypted.ciphertext,
                    "record_hash": entry.record_hash,
                }
                for entry in entries
                if entry.row_number not in settled
            ]
            if rows:
                # One executemany, not one ORM object per row: thousands of rows a night.
                s.execute(insert(QuarantinedRow), rows)
            crash_point("mid_quarantine_write")
        return self.count_quarantined(file_id)

    def count_quarantined(self, file_id: str, status: QuarantineStatus | None = None) -> int:
        """Quarantined rows of a file (optionally in one status)."""
        query = select(func.count()).select_from(QuarantinedRow)
        query = query.where(QuarantinedRow.file_id == file_id)
        if status is not None:
            query = query.where(QuarantinedRow.status == status)
        with self.session() as s:
            return int(s.scalar(query) or 0)

    def quarantined_rows(self, file_id: str) -> list[QuarantinedRow]:
        """Every quarantine row of a file, in row order."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(QuarantinedRow)
                    .where(QuarantinedRow.file_id == file_id)
                    .order_by(QuarantinedRow.row_number)
                )
            )

    # loads ------------------------------------------------------------------------------

    def record_load(self, *, run_id: str, file_id: str, load: LoadRecord) -> None:
        """Record one confirmed load."""
        with self.session() as s:
            s.merge(
                Load(
                    id=load.load_id,
                    run_id=run_id,
                    file_id=file_id,
                    target=load.target,
                    rows_sent=load.rows_sent,
                    rows_inserted=load.rows_inserted,
                    rows_updated=load.rows_updated,
                    rows_unchanged=load.rows_unchanged,
                    rows_rejected=load.rows_rejected,
                    rows_confirmed=load.rows_confirmed,
                    rows_inactivated=load.rows_inactivated,
                    seconds=load.seconds,
                )
            )
            s.flush()
            existing = {
                row
                for row in s.scalars(
                    select(TargetRejection.row_number).where(
                        TargetRejection.load_id == load.load_id
                    )
                )
            }
            s.add_all(
                TargetRejection(
                    load_id=load.load_id,
                    file_id=file_id,
                    target=load.target,
                    row_number=row,
                    reason=reason,
                )
                for row, reason in load.rejections
                if row not in existing
            )
            crash_point("mid_load_record", s.flush)

    def loads_for_run_file(self, run_id: str, file_id: str) -> list[Load]:
        """The loads one run made for one file."""
        with self.session() as s:
            return list(
                s.scalars(select(Load).where(Load.run_id == run_id, Load.file_id == file_id))
            )
