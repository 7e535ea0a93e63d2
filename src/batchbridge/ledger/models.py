"""SQLAlchemy models of the ledger: runs, files, loads, quarantined rows, audit events."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Timezone-aware now in UTC (the ledger stores UTC only)."""
    return datetime.now(UTC)


class FileState(StrEnum):
    """Where a file is in its journey; it moves forward only, or to failed."""

    DISCOVERED = "discovered"
    FETCHED = "fetched"
    VERIFIED = "verified"
    VALIDATED = "validated"
    LOADED = "loaded"
    RECONCILED = "reconciled"
    FAILED = "failed"


class RunStatus(StrEnum):
    """Outcome of one feed run."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class QuarantineStatus(StrEnum):
    """Where a quarantined row is in the steward's workflow."""

    QUARANTINED = "quarantined"
    RELEASED = "released"
    DISCARDED = "discarded"


class Base(DeclarativeBase):
    """Declarative base; timestamps are stored timezone-aware."""

    type_annotation_map = {datetime: DateTime(timezone=True)}


class Run(Base):
    """One execution of a feed's flow."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    feed: Mapped[str] = mapped_column(String(63), index=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING)
    is_rerun: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    report: Mapped[dict[str, object] | None] = mapped_column(JSON)


class LedgerFile(Base):
    """A remote file, keyed by feed + name + size + sha256, and its stage-by-stage state."""

    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("tenant", "feed", "name", "size", "sha256", name="uq_files_identity"),
        Index("ix_files_feed_name", "feed", "name"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    feed: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=FileState.DISCOVERED)
    failed_stage: Mapped[str | None] = mapped_column(String(32))
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    rows_read: Mapped[int | None] = mapped_column(Integer)
    rows_declared: Mapped[int | None] = mapped_column(Integer)
    rows_valid: Mapped[int | None] = mapped_column(Integer)
    rows_quarantined: Mapped[int | None] = mapped_column(Integer)
    signer_fingerprint: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    reconciled_at: Mapped[datetime | None] = mapped_column()


class RunFile(Base):
    """What one run did with one file (a file may appear in several runs)."""

    __tablename__ = "run_files"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16))
    is_rerun: Mapped[bool] = mapped_column(Boolean, default=False)
    stage_seconds: Mapped[dict[str, float] | None] = mapped_column(JSON)


class Load(Base):
    """One load of one file's rows into one target, with what the target confirmed."""

    __tablename__ = "loads"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), index=True)
    target: Mapped[str] = mapped_column(String(63))
    rows_sent: Mapped[int] = mapped_column(Integer)
    rows_inserted: Mapped[int] = mapped_column(Integer, default=0)
    rows_updated: Mapped[int] = mapped_column(Integer, default=0)
    rows_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0)
    rows_confirmed: Mapped[int] = mapped_column(Integer, default=0)
    rows_inactivated: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[datetime] = mapped_column(default=utcnow)


class TargetRejection(Base):
    """A row a target refused as invalid: where it came from and a reason code, no values."""

    __tablename__ = "target_rejections"
    __table_args__ = (UniqueConstraint("load_id", "row_number", name="uq_rejection_load_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    load_id: Mapped[str] = mapped_column(ForeignKey("loads.id"), index=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), index=True)
    target: Mapped[str] = mapped_column(String(63))
    row_number: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(128))


class QuarantinedRow(Base):
    """A row that failed validation: reasons in clear, the raw row only encrypted."""

    __tablename__ = "quarantined_rows"
    __table_args__ = (UniqueConstraint("file_id", "row_number", name="uq_quarantine_file_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    feed: Mapped[str] = mapped_column(String(63), index=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), index=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    row_number: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=QuarantineStatus.QUARANTINED)
    key_id: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    # Keyed hash (RowCipher.lookup_hash) of the row's record id, for exact search.
    record_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    released_load_id: Mapped[str | None] = mapped_column(String(36))
    settled_by: Mapped[str | None] = mapped_column(String(128))
    settled_at: Mapped[datetime | None] = mapped_column()
    settle_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class QuarantineEdit(Base):
    """A steward's fix of a quarantined row: who, when, which columns; values encrypted."""

    __tablename__ = "quarantine_edits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    quarantine_id: Mapped[int] = mapped_column(ForeignKey("quarantined_rows.id"), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    columns: Mapped[list[str]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEvent(Base):
    """Append-only audit trail, each event chained to the hash of the previous one."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_ids: Mapped[list[str]] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, object] | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row: the newest event's hash and the event count.

    Every append updates it first, which serializes appenders on SQLite and PostgreSQL
    alike, and lets `audit verify` notice events deleted from the end of the log.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_hash: Mapped[str] = mapped_column(String(64))
    events: Mapped[int] = mapped_column(Integer)
