"""Quarantine queries for stewards: filtered listings, edits, per-file balance; no decryption."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVarTuple

from sqlalchemy import Exists, Select, exists, func, select
from sqlalchemy.orm import Session

from batchbridge.errors import StewardError
from batchbridge.ledger.crypto import EncryptedRow
from batchbridge.ledger.models import (
    LedgerFile,
    QuarantinedRow,
    QuarantineEdit,
    QuarantineStatus,
)

FIXED = "fixed"
"""A listing status: still quarantined, with at least one recorded fix (pending release)."""

LISTING_STATUSES = (
    QuarantineStatus.QUARANTINED.value,
    FIXED,
    QuarantineStatus.RELEASED.value,
    QuarantineStatus.DISCARDED.value,
)
"""Statuses a listing may filter on (`quarantined` includes the fixed ones)."""


@dataclass(frozen=True)
class QuarantineFilter:
    """Which quarantined rows a steward asks for; every field narrows the selection."""

    tenants: Sequence[str] | None = None
    feed: str | None = None
    file_id: str | None = None
    run_id: str | None = None
    reason: str | None = None
    status: str | None = QuarantineStatus.QUARANTINED
    ids: Sequence[int] | None = None
    quarantined_before: datetime | None = None
    """Only rows quarantined before this instant (older than an age)."""
    quarantined_after: datetime | None = None
    """Only rows quarantined at or after this instant (younger than an age)."""


@dataclass(frozen=True)
class QuarantineSummary:
    """One quarantined row as a listing shows it: ids, position, reasons, status; no values."""

    id: int
    tenant: str
    feed: str
    file_id: str
    file_name: str
    run_id: str
    row_number: int
    reasons: list[str]
    status: str
    quarantined_at: datetime | None = None
    fixed: bool = False
    """Still quarantined with at least one recorded fix: waiting for a release."""

    @property
    def shown_status(self) -> str:
        """`fixed` for a fixed row not yet released, else the stored status."""
        return FIXED if self.fixed and self.status == QuarantineStatus.QUARANTINED else self.status


@dataclass(frozen=True)
class QuarantinePage:
    """The listed rows (at most the asked limit) and how many matched in all."""

    rows: list[QuarantineSummary]
    total: int


@dataclass(frozen=True)
class EditSummary:
    """One recorded fix: who, when, which columns, how (cli or import); values only on reveal."""

    id: int
    actor: str
    at: datetime
    columns: list[str]
    source: str
    # Patient values (only filled by reveal): kept out of repr so a log line cannot leak them.
    before: dict[str, str | None] | None = field(default=None, repr=False)
    after: dict[str, str | None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FileBalance:
    """Per file: read = loaded at first run + loaded after fix + still quarantined + discarded."""

    file_id: str
    file_name: str
    tenant: str
    feed: str
    state: str
    rows_read: int | None
    loaded_first_run: int | None
    loaded_after_fix: int
    still_quarantined: int
    discarded: int

    @property
    def balanced(self) -> bool:
        if self.rows_read is None or self.loaded_first_run is None:
            return False
        accounted = (
            self.loaded_first_run + self.loaded_after_fix + self.still_quarantined + self.discarded
        )
        return self.rows_read == accounted

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, with `balanced`."""
        return {
            "file_id": self.file_id,
            "file_name": self.file_name,
            "tenant": self.tenant,
            "feed": self.feed,
            "state": self.state,
            "rows_read": self.rows_read,
            "loaded_first_run": self.loaded_first_run,
            "loaded_after_fix": self.loaded_after_fix,
            "still_quarantined": self.still_quarantined,
            "discarded": self.discarded,
            "balanced": self.balanced,
        }


def reason_matches(reasons: Sequence[str], wanted: str) -> bool:
    """'column:rule' matches that exact reason; a bare 'rule' matches it on any column."""
    if ":" in wanted:
        return wanted in reasons
    return any(reason.partition(":")[2] == wanted or reason == wanted for reason in reasons)


def check_status(status: str | None) -> None:
    """Refuse a status filter that names no status (a typo would silently list nothing)."""
    if status is not None and status not in LISTING_STATUSES:
        raise StewardError(f"unknown status {status!r} (known: {', '.join(LISTING_STATUSES)})")


_Row = TypeVarTuple("_Row")


def _has_edits() -> Exists:
    return exists().where(QuarantineEdit.quarantine_id == QuarantinedRow.id)


def _filtered(query: Select[*_Row], where: QuarantineFilter) -> Select[*_Row]:
    """`query` narrowed by every filter but the reason (a JSON list: matched in Python)."""
    check_status(where.status)
    if where.tenants is not None:
        query = query.where(QuarantinedRow.tenant.in_(list(where.tenants)))
    if where.feed is not None:
        query = query.where(QuarantinedRow.feed == where.feed)
    if where.file_id is not None:
        query = query.where(QuarantinedRow.file_id == where.file_id)
    if where.run_id is not None:
        query = query.where(QuarantinedRow.run_id == where.run_id)
    if where.status == FIXED:
        query = query.where(QuarantinedRow.status == QuarantineStatus.QUARANTINED, _has_edits())
    elif where.status is not None:
        query = query.where(QuarantinedRow.status == where.status)
    if where.ids is not None:
        query = query.where(QuarantinedRow.id.in_(list(where.ids)))
    # UTC: SQLite keeps the ledger's UTC times without their offset.
    if where.quarantined_before is not None:
        query = query.where(QuarantinedRow.created_at < where.quarantined_before.astimezone(UTC))
    if where.quarantined_after is not None:
        query = query.where(QuarantinedRow.created_at >= where.quarantined_after.astimezone(UTC))
    return query.order_by(QuarantinedRow.file_id, QuarantinedRow.row_number)


def find_rows(session: Session, where: QuarantineFilter) -> list[QuarantinedRow]:
    """Rows matching every given filter, in (file, row number) order."""
    rows = list(session.scalars(_filtered(select(QuarantinedRow), where)))
    # Reasons are a JSON list: filtered here, the same way on SQLite and PostgreSQL.
    if where.reason is not None:
        rows = [row for row in rows if reason_matches(row.reasons, where.reason)]
    return rows


@dataclass(frozen=True)
class QuarantineSlice:
    """One page of matching rows, how many match in all, and their reasons counted."""

    rows: list[QuarantinedRow]
    total: int
    reason_counts: dict[str, int]


def find_slice(
    session: Session, where: QuarantineFilter, *, offset: int, limit: int
) -> QuarantineSlice:
    """Rows `offset` to `offset + limit` of find_rows' order, the total and reason counts.

    Only ids and reasons of the whole selection are read; ciphertexts only for the page.
    """
    light = select(QuarantinedRow.id, QuarantinedRow.reasons)
    matched = [
        (int(row_id), list(reasons))
        for row_id, reasons in session.execute(_filtered(light, where))
        if where.reason is None or reason_matches(reasons, where.reason)
    ]
    counts: Counter[str] = Counter(reason for _, reasons in matched for reason in reasons)
    page = [row_id for row_id, _ in matched[max(offset, 0) : max(offset, 0) + max(limit, 0)]]
    found = rows_by_id(session, page)
    return QuarantineSlice(
        rows=[found[i] for i in page if i in found],
        total=len(matched),
        reason_counts=dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))),
    )


def rows_by_id(session: Session, ids: Sequence[int]) -> dict[int, QuarantinedRow]:
    """The rows that exist among `ids`, by id (any status, any tenant)."""
    if not ids:
        return {}
    found = session.scalars(select(QuarantinedRow).where(QuarantinedRow.id.in_(list(ids))))
    return {row.id: row for row in found}


def file_names(session: Session, file_ids: Sequence[str]) -> dict[str, str]:
    """Remote file name of each ledger file id."""
    if not file_ids:
        return {}
    found = session.execute(
        select(LedgerFile.id, LedgerFile.name).where(LedgerFile.id.in_(sorted(set(file_ids))))
    )
    return {file_id: name for file_id, name in found}


def edited_ids(session: Session, ids: Sequence[int]) -> set[int]:
    """Which of these rows have at least one recorded fix."""
    if not ids:
        return set()
    found = session.scalars(
        select(QuarantineEdit.quarantine_id)
        .where(QuarantineEdit.quarantine_id.in_(list(ids)))
        .distinct()
    )
    return set(found)


def summarize(session: Session, rows: Sequence[QuarantinedRow]) -> list[QuarantineSummary]:
    """Listing entries for rows (file names and fixes looked up once)."""
    names = file_names(session, [row.file_id for row in rows])
    edited = edited_ids(session, [row.id for row in rows])
    return [
        QuarantineSummary(
            id=row.id,
            tenant=row.tenant,
            feed=row.feed,
            file_id=row.file_id,
            file_name=names.get(row.file_id, "?"),
            run_id=row.run_id,
            row_number=row.row_number,
            reasons=list(row.reasons),
            status=row.status,
            quarantined_at=row.created_at,
            fixed=row.id in edited,
        )
        for row in rows
    ]


def edits_of(session: Session, quarantine_id: int) -> list[QuarantineEdit]:
    """Every recorded fix of one row, oldest first."""
    return list(
        session.scalars(
            select(QuarantineEdit)
            .where(QuarantineEdit.quarantine_id == quarantine_id)
            .order_by(QuarantineEdit.id)
        )
    )


def encrypted_of(row: QuarantinedRow | QuarantineEdit) -> EncryptedRow:
    """The stored ciphertext of a row or an edit."""
    return EncryptedRow(key_id=row.key_id, nonce=row.nonce, ciphertext=row.ciphertext)


def edit_associated_data(quarantine_id: int) -> bytes:
    """Bind an edit's ciphertext to its quarantined row: moved to another row, it fails."""
    return f"quarantine-edit:{quarantine_id}".encode()


def balance_of(session: Session, file: LedgerFile) -> FileBalance:
    """A file's balance from its first-run counts and its quarantine rows' statuses."""
    counts = {
        status: int(count)
        for status, count in session.execute(
            select(QuarantinedRow.status, func.count())
            .where(QuarantinedRow.file_id == file.id)
            .group_by(QuarantinedRow.status)
        )
    }
    return FileBalance(
        file_id=file.id,
        file_name=file.name,
        tenant=file.tenant,
        feed=file.feed,
        state=file.state,
        rows_read=file.rows_read,
        loaded_first_run=file.rows_valid,
        loaded_after_fix=counts.get(QuarantineStatus.RELEASED, 0),
        still_quarantined=counts.get(QuarantineStatus.QUARANTINED, 0),
        discarded=counts.get(QuarantineStatus.DISCARDED, 0),
    )
