"""The audit log as stewards see it: one row's history, and (admins) events by actor, row, time.

A row's history is shown to whoever may see the row; the audit log at large only to
admins, limited to their tenants, and that look is itself audited. Events carry who,
when, action, ids and the person's reason, never a patient value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from batchbridge.config.stewards import Role
from batchbridge.errors import AccessDeniedError
from batchbridge.ledger.audit import (
    ChainReport,
    EventFilter,
    append_event,
    find_events,
    verify_chain,
)
from batchbridge.ledger.models import AuditEvent
from batchbridge.steward.access import ROW, StewardAccess
from batchbridge.steward.audited_filters import audited_filters

LISTING_ACTIONS = frozenset({"list", "search"})
"""Events that name a row only because it was among the rows listed: left out of its history."""

AUDIT_LOG = "audit_log"
"""The audit object type of a look at the audit log."""


@dataclass(frozen=True)
class AuditEntry:
    """One audit event, detached from the ledger session."""

    id: int
    at: datetime
    actor: str
    action: str
    tenant: str
    object_type: str
    object_ids: list[str]
    reason: str | None
    details: dict[str, Any] | None

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEntry:
        return cls(
            id=event.id,
            at=event.at,
            actor=event.actor,
            action=event.action,
            tenant=event.tenant,
            object_type=event.object_type,
            object_ids=list(event.object_ids),
            reason=event.reason,
            details=dict(event.details) if event.details else None,
        )


@dataclass(frozen=True)
class AuditPage:
    """Events newest first, how many matched in all, and where the page starts."""

    entries: list[AuditEntry]
    total: int
    offset: int
    limit: int


class AuditView(StewardAccess):
    """row_history, audit_events, verify_audit_chain of StewardService."""

    def row_history(self, quarantine_id: int, *, limit: int = 100) -> list[AuditEntry]:
        """Events about one row (not listings that merely included it), newest first."""
        row = self._row(quarantine_id, "show")
        with self.store.session() as s:
            found = find_events(
                s,
                EventFilter(
                    tenants=[row.tenant],
                    object_type=ROW,
                    object_id=str(quarantine_id),
                    exclude_actions=sorted(LISTING_ACTIONS),
                    limit=limit,
                ),
            )
        return [AuditEntry.of(e) for e in found.events]

    def _admin_tenants(self, attempted: str) -> list[str]:
        tenants = self.directory.tenants(self.actor, Role.ADMIN)
        if tenants:
            return tenants
        for tenant in self.directory.tenants(self.actor):
            self._audit_denied(tenant, attempted, AUDIT_LOG, [])
        raise AccessDeniedError(f"{self.actor} is admin for no tenant; the audit log needs admin")

    def audit_events(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        row_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> AuditPage:
        """Events of the tenants where the person is admin, newest first; the look is audited."""
        tenants = self._admin_tenants("audit_log")
        where = EventFilter(
            tenants=tenants,
            actor=actor,
            action=action,
            object_type=ROW if row_id is not None else None,
            object_id=str(row_id) if row_id is not None else None,
            since=since,
            until=until,
            offset=offset,
            limit=limit,
        )
        with self.store.session() as s:
            found = find_events(s, where)
            entries = [AuditEntry.of(e) for e in found.events]
            filters = audited_filters(
                {
                    "actor": actor,
                    "action": action,
                    "row_id": row_id,
                    "since": since and since.isoformat(),
                    "until": until and until.isoformat(),
                    "offset": offset,
                },
                free_text=("actor", "action"),
                confirmed=("actor", "action") if found.total else (),
            )
            _audit_look(s, self.actor, tenants, filters, found.total)
        return AuditPage(entries=entries, total=found.total, offset=offset, limit=limit)

    def verify_audit_chain(self) -> ChainReport:
        """Recompute the whole chain (admins only): edited, inserted and deleted events."""
        self._admin_tenants("audit_verify")
        with self.store.session() as s:
            return verify_chain(s)


def _audit_look(
    s: Session, actor: str, tenants: Sequence[str], filters: dict[str, Any], matched: int
) -> None:
    for tenant in tenants:
        append_event(
            s,
            actor=actor,
            action="report",
            tenant=tenant,
            object_type=AUDIT_LOG,
            object_ids=[],
            details={"filters": filters, "matched": matched},
        )
