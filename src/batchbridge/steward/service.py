"""Data stewards' work on quarantined rows: every look, fix and release checked and audited.

`StewardService` is the whole API (CLI, web workbench, replay flow and tests use it).
Access rules are in steward.access, the CSV round trip in steward.exchange, key
rotation in steward.keys, release mechanics in steward.release, the workbench's queue
and bulk selections in steward.queue and steward.bulk, the fix preview in
steward.preview, audit history in steward.history. Audit events carry who, when,
action, tenant, ids, column names and the person's reason: never a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchbridge.config.settings import Settings
from batchbridge.config.stewards import current_actor, open_directory
from batchbridge.errors import StewardError
from batchbridge.ledger.audit import append_event
from batchbridge.ledger.models import (
    LedgerFile,
    QuarantineStatus,
    Run,
    utcnow,
)
from batchbridge.ledger.quarantine_store import (
    EditSummary,
    FileBalance,
    QuarantinePage,
    QuarantineSummary,
    balance_of,
    edit_associated_data,
    edits_of,
    encrypted_of,
    file_names,
)
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.access import ROW
from batchbridge.steward.bulk import BulkActions
from batchbridge.steward.exchange import CsvExchange
from batchbridge.steward.history import AuditView
from batchbridge.steward.keys import KeyRotation
from batchbridge.steward.preview import FixPreviewing, check_columns
from batchbridge.steward.queue import QueueView

__all__ = ["ShownRow", "StewardService", "mask"]


def mask(value: str | None) -> str | None:
    """First character and length only: enough to tell rows apart, not to read them.

    Values shorter than three characters (sex, flags) show their length only: their
    first character would be most or all of the value.
    """
    if not value:
        return value
    if len(value) < 3:
        return f"… ({len(value)})"
    return f"{value[0]}… ({len(value)})"


@dataclass(frozen=True)
class ShownRow:
    """One quarantined row for a steward: masked values (show) or clear values (reveal)."""

    id: int
    tenant: str
    feed: str
    file_id: str
    file_name: str
    row_number: int
    reasons: list[str]
    status: str
    revealed: bool
    settled_by: str | None
    settled_at: datetime | None
    settle_reason: str | None
    released_load_id: str | None
    # Kept out of repr: a revealed row printed into a log would leak its values.
    values: dict[str, str | None] = field(repr=False)
    edits: list[EditSummary] = field(repr=False, default_factory=list)


class StewardService(QueueView, BulkActions, FixPreviewing, AuditView, CsvExchange, KeyRotation):
    """What a data steward can do with quarantined rows; one instance acts as one person."""

    @classmethod
    def from_settings(cls, settings: Settings) -> StewardService:
        """The acting person (BATCHBRIDGE_ACTOR or OS login) on the configured ledger."""
        return cls(
            LedgerStore.open_existing(settings.database_url),
            config_dir=settings.config_dir,
            directory=open_directory(settings.config_dir),
            actor=current_actor(),
        )

    # listing and viewing -----------------------------------------------------------------

    def list_rows(
        self,
        *,
        tenant: str | None = None,
        feed: str | None = None,
        file_id: str | None = None,
        run_id: str | None = None,
        reason: str | None = None,
        status: str | None = QuarantineStatus.QUARANTINED,
    ) -> list[QuarantineSummary]:
        """Rows of the actor's tenants matching every filter: ids, reasons, status; no values."""
        return self.list_page(
            tenant=tenant,
            feed=feed,
            file_id=file_id,
            run_id=run_id,
            reason=reason,
            status=status,
        ).rows

    def list_page(
        self,
        *,
        tenant: str | None = None,
        feed: str | None = None,
        file_id: str | None = None,
        run_id: str | None = None,
        reason: str | None = None,
        status: str | None = QuarantineStatus.QUARANTINED,
        record_id: str | None = None,
        limit: int | None = None,
    ) -> QuarantinePage:
        """Up to `limit` matching rows and the number matching; the listing is audited.

        `record_id` finds rows by their exact record id (audited as a search, see
        steward.search); the other filters narrow further.
        """
        page = self.listing(
            tenant=tenant,
            feed=feed,
            file_id=file_id,
            run_id=run_id,
            reason=reason,
            status=status,
            record_id=record_id,
            limit=limit,
        )
        return QuarantinePage(rows=page.rows, total=page.total)

    def show(self, quarantine_id: int) -> ShownRow:
        """A row with masked values (first character + length), its reasons and edits."""
        return self._view(quarantine_id, reveal=False, why=None)

    def reveal(self, quarantine_id: int, *, why: str) -> ShownRow:
        """A row with clear values; audited with `why` before anything is returned."""
        if not why or not why.strip():
            raise StewardError("reveal needs a reason (--why): it is written to the audit log")
        return self._view(quarantine_id, reveal=True, why=why.strip())

    def _view(self, quarantine_id: int, *, reveal: bool, why: str | None) -> ShownRow:
        action = "reveal" if reveal else "show"
        row = self._row(quarantine_id, action)
        ctx = self.feed_for(row.feed, row.tenant)
        values = ctx.decrypt(row)
        with self.store.session() as s:
            name = file_names(s, [row.file_id]).get(row.file_id, "?")
            edits: list[EditSummary] = []
            for edit in edits_of(s, quarantine_id):
                before: dict[str, str | None] | None = None
                after: dict[str, str | None] | None = None
                if reveal:
                    payload = ctx.keyring.decrypt(
                        encrypted_of(edit), edit_associated_data(quarantine_id)
                    )
                    before = {c: payload.get(f"before:{c}") for c in edit.columns}
                    after = {c: payload.get(f"after:{c}") for c in edit.columns}
                edits.append(
                    EditSummary(
                        id=edit.id,
                        actor=edit.actor,
                        at=edit.at,
                        columns=list(edit.columns),
                        source=edit.source,
                        before=before,
                        after=after,
                    )
                )
            append_event(
                s,
                actor=self.actor,
                action=action,
                tenant=row.tenant,
                object_type=ROW,
                object_ids=[quarantine_id],
                reason=why,
            )
        ordered = {c: values.get(c) for c in ctx.schema.columns}
        return ShownRow(
            id=row.id,
            tenant=row.tenant,
            feed=row.feed,
            file_id=row.file_id,
            file_name=name,
            row_number=row.row_number,
            reasons=list(row.reasons),
            status=row.status,
            revealed=reveal,
            settled_by=row.settled_by,
            settled_at=row.settled_at,
            settle_reason=row.settle_reason,
            released_load_id=row.released_load_id,
            values=ordered if reveal else {c: mask(v) for c, v in ordered.items()},
            edits=edits,
        )

    # fixing -------------------------------------------------------------------------------

    def fix(
        self,
        quarantine_id: int,
        changes: dict[str, str],
        *,
        why: str | None = None,
        source: str = "cli",
    ) -> list[str]:
        """Set column values of a quarantined row; who, when and before/after are recorded.

        `source` says where the fix was made (cli, web). Returns the columns really changed.
        """
        if not changes:
            raise StewardError("nothing to change: give at least one column=value")
        row = self._row(quarantine_id, "fix")
        self._require_quarantined(row)
        ctx = self.feed_for(row.feed, row.tenant)
        check_columns(ctx, row.feed, changes)
        with self.store.session() as s:
            locked = self._locked(s, [quarantine_id])[quarantine_id]
            changed = self._apply(s, ctx, locked, changes, source=source)
            if changed:
                append_event(
                    s,
                    actor=self.actor,
                    action="fix",
                    tenant=row.tenant,
                    object_type=ROW,
                    object_ids=[quarantine_id],
                    reason=why,
                    details={"columns": changed},
                )
        return changed

    def discard(self, quarantine_id: int, *, reason: str) -> None:
        """Settle a row for good without loading it (terminal); the reason is required."""
        if not reason or not reason.strip():
            raise StewardError("discard needs a reason (--why): it is written to the audit log")
        row = self._row(quarantine_id, "discard")
        self._require_quarantined(row)
        with self.store.session() as s:
            locked = self._locked(s, [quarantine_id])[quarantine_id]
            locked.status = QuarantineStatus.DISCARDED
            locked.settled_by = self.actor
            locked.settled_at = utcnow()
            locked.settle_reason = reason.strip()
            append_event(
                s,
                actor=self.actor,
                action="discard",
                tenant=row.tenant,
                object_type=ROW,
                object_ids=[quarantine_id],
                reason=reason.strip(),
            )

    # balance and reports ------------------------------------------------------------------

    def file_balance(self, file_id: str) -> FileBalance:
        """read = loaded at first run + loaded after fix + still quarantined + discarded."""
        file = self.file_for(file_id, "report")
        with self.store.session() as s:
            self._audit_report(s, file.tenant, "file", file.id)
            return balance_of(s, s.get_one(LedgerFile, file.id))

    def run_report(self, run_id: str) -> dict[str, Any] | None:
        """A run's stored report plus the current balance of each of its files (None: no run)."""
        with self.store.session() as s:
            run = s.get(Run, run_id)
        if run is None:
            return None
        if self.directory.role(self.actor, run.tenant) is None:
            self._audit_denied(run.tenant, "report", "run", [run_id])
            return None
        self.require(run.tenant, "report", "run", [run_id])
        stored: dict[str, Any] = dict(run.report or {})
        file_ids = [f["file_id"] for f in stored.get("files", []) if f.get("file_id")]
        with self.store.session() as s:
            self._audit_report(s, run.tenant, "run", run.id)
            balances = [
                balance_of(s, file).to_dict()
                for file in s.scalars(select(LedgerFile).where(LedgerFile.id.in_(file_ids)))
            ]
        return {"run_id": run.id, "status": run.status, "report": stored, "balances": balances}

    def _audit_report(self, s: Session, tenant: str, object_type: str, object_id: str) -> None:
        append_event(
            s,
            actor=self.actor,
            action="report",
            tenant=tenant,
            object_type=object_type,
            object_ids=[object_id],
        )
