"""Steward identity and access checks, row locking and the edit mechanism shared by fix and import.

Each action needs a role (access.ACTION_ROLES) for the tenant of the rows it touches.
A refused attempt is written to the audit log in its own transaction, then raised. A
row of a tenant where the person holds no role at all is reported exactly like a
missing row (QuarantineRowNotFoundError), so ids cannot be probed across tenants; a
weaker role than needed gives AccessDeniedError naming the role and the action.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchbridge.config import load_feed
from batchbridge.config.stewards import SHARED_ACCOUNTS, StewardDirectory, is_allowed, required_role
from batchbridge.errors import (
    AccessDeniedError,
    FeedNotFoundError,
    QuarantineRowNotFoundError,
    RowStateError,
    StewardError,
)
from batchbridge.ledger.audit import append_event
from batchbridge.ledger.crypto import row_associated_data
from batchbridge.ledger.models import (
    LedgerFile,
    QuarantinedRow,
    QuarantineEdit,
    QuarantineStatus,
    utcnow,
)
from batchbridge.ledger.quarantine_store import edit_associated_data, rows_by_id
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.feed_context import FeedContext, feed_context

ROW = "quarantined_row"
"""The audit object type of a quarantined row."""


def record_hash(ctx: FeedContext, values: Mapping[str, str | None]) -> str | None:
    """The blind-index hash of a row's record id under the feed's current key (None: blank)."""
    record = values.get(ctx.schema.natural_key[0])
    return ctx.keyring.current.lookup_hash(record) if record and record.strip() else None


def _blank(value: str | None) -> str:
    return value or ""


class StewardAccess:
    """One acting person on the ledger: who may do what, and how rows change safely."""

    def __init__(
        self, store: LedgerStore, *, config_dir: Path, directory: StewardDirectory, actor: str
    ) -> None:
        actor = actor.strip()
        if not actor:
            raise AccessDeniedError("no acting identity: set BATCHBRIDGE_ACTOR")
        if actor.lower() in SHARED_ACCOUNTS:
            raise AccessDeniedError(
                f"{actor!r} is a shared account; every steward action must name a person"
            )
        self.store = store
        self.config_dir = config_dir
        self.directory = directory
        self.actor = actor

    def _audit_denied(
        self, tenant: str, action: str, object_type: str, object_ids: Sequence[str | int]
    ) -> None:
        # Its own committed transaction: the refused action itself never commits.
        with self.store.session() as s:
            append_event(
                s,
                actor=self.actor,
                action="access_denied",
                tenant=tenant,
                object_type=object_type,
                object_ids=object_ids,
                details={"attempted": action},
            )

    def require(
        self, tenant: str, action: str, object_type: str, object_ids: Sequence[str | int]
    ) -> None:
        """Return when the actor may do `action` on `tenant`; else audit and raise."""
        if is_allowed(self.directory, self.actor, tenant, action):
            return
        self._audit_denied(tenant, action, object_type, object_ids)
        role = self.directory.role(self.actor, tenant)
        if role is None:
            raise AccessDeniedError(f"{self.actor} has no steward role for tenant {tenant}")
        raise AccessDeniedError(
            f"{self.actor} is {role.name.lower()} for tenant {tenant}; "
            f"{action} needs {required_role(action).name.lower()}"
        )

    def _not_found(self, ids: Iterable[int]) -> NoReturn:
        listed = ", ".join(str(i) for i in sorted(ids))
        tenants = ", ".join(self.directory.tenants(self.actor)) or "none"
        raise QuarantineRowNotFoundError(
            f"no quarantined row {listed} among your tenants' rows (your tenants: {tenants})"
        )

    def checked_rows(
        self, found: Mapping[int, QuarantinedRow], ids: Sequence[int], action: str
    ) -> list[QuarantinedRow]:
        """The rows for `ids`, after access checks (see the module docstring)."""
        missing = [i for i in ids if i not in found]
        foreign: dict[str, list[int]] = defaultdict(list)
        for i in ids:
            if i in found and self.directory.role(self.actor, found[i].tenant) is None:
                foreign[found[i].tenant].append(i)
        for tenant, tenant_ids in foreign.items():
            self._audit_denied(tenant, action, ROW, tenant_ids)
        if missing or foreign:
            self._not_found([*missing, *(i for t in foreign.values() for i in t)])
        by_tenant: dict[str, list[int]] = defaultdict(list)
        for i in ids:
            by_tenant[found[i].tenant].append(i)
        for tenant, tenant_ids in by_tenant.items():
            self.require(tenant, action, ROW, tenant_ids)
        return [found[i] for i in ids]

    def _row(self, quarantine_id: int, action: str) -> QuarantinedRow:
        with self.store.session() as s:
            found = rows_by_id(s, [quarantine_id])
        return self.checked_rows(found, [quarantine_id], action)[0]

    def file_for(self, file_id: str, action: str) -> LedgerFile:
        with self.store.session() as s:
            file = s.get(LedgerFile, file_id)
        if file is not None and self.directory.role(self.actor, file.tenant) is None:
            self._audit_denied(file.tenant, action, "file", [file_id])
            file = None
        if file is None:
            tenants = ", ".join(self.directory.tenants(self.actor)) or "none"
            raise StewardError(f"no file {file_id} among your tenants' files ({tenants})")
        self.require(file.tenant, action, "file", [file_id])
        return file

    def _feed_tenant(self, feed: str) -> str | None:
        try:
            return load_feed(feed, self.config_dir).config.tenant
        except FeedNotFoundError:
            return None

    def confirmed_filters(self, *, feed: str | None, reason: str | None, matched: int) -> list[str]:
        """Which free-text filters the data confirmed (see steward.audited_filters)."""
        confirmed = []
        if feed is not None and self._feed_tenant(feed) is not None:
            confirmed.append("feed")
        if reason is not None and matched > 0:
            confirmed.append("reason")  # it matched rows: it is one of their reason codes
        return confirmed

    def feed_for(self, feed: str, tenant: str) -> FeedContext:
        return feed_context(feed, self.config_dir, tenant=tenant)

    @staticmethod
    def _require_quarantined(row: QuarantinedRow) -> None:
        if row.status != QuarantineStatus.QUARANTINED:
            raise RowStateError(
                f"quarantined row {row.id} is {row.status} already; only quarantined rows change"
            )

    def _apply(
        self,
        s: Session,
        ctx: FeedContext,
        row: QuarantinedRow,
        changes: Mapping[str, str],
        source: str,
    ) -> list[str]:
        """Apply changes to a locked row: an encrypted before/after edit, the row re-encrypted.

        Returns the columns whose value really changed (an empty cell equals a missing one).
        """
        values = ctx.decrypt(row)
        changed = sorted(c for c, v in changes.items() if _blank(values.get(c)) != v)
        if not changed:
            return []
        payload: dict[str, str | None] = {}
        for column in changed:
            payload[f"before:{column}"] = values.get(column)
            payload[f"after:{column}"] = changes[column]
            values[column] = changes[column]
        edit = ctx.keyring.encrypt(payload, edit_associated_data(row.id))
        s.add(
            QuarantineEdit(
                quarantine_id=row.id,
                actor=self.actor,
                at=utcnow(),
                columns=changed,
                source=source,
                key_id=edit.key_id,
                nonce=edit.nonce,
                ciphertext=edit.ciphertext,
            )
        )
        encrypted = ctx.keyring.encrypt(values, row_associated_data(row.file_id, row.row_number))
        row.key_id, row.nonce, row.ciphertext = (
            encrypted.key_id,
            encrypted.nonce,
            encrypted.ciphertext,
        )
        row.record_hash = record_hash(ctx, values)
        row.updated_at = utcnow()
        return changed

    def _locked(self, s: Session, ids: Sequence[int]) -> dict[int, QuarantinedRow]:
        """Rows re-read under a row lock (PostgreSQL), each still quarantined, or RowStateError."""
        found = {
            row.id: row
            for row in s.scalars(
                select(QuarantinedRow).where(QuarantinedRow.id.in_(list(ids))).with_for_update()
            )
        }
        for i in ids:
            if i not in found:
                self._not_found([i])
            self._require_quarantined(found[i])
        return found
