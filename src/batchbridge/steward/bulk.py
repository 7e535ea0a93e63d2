"""Bulk steward actions by feed, file and reason: count first, then release or discard.

A bulk selection is what a release or discard would take, counted (and audited as a
list) before anything happens, so a person confirms numbers, not a guess. A bulk
discard settles every selected row in one transaction and one audit event per tenant;
a bulk release is steward.release.release_rows with the same selection.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select

from batchbridge.errors import StewardError
from batchbridge.ledger.audit import append_event
from batchbridge.ledger.models import (
    FileState,
    LedgerFile,
    QuarantinedRow,
    QuarantineStatus,
    utcnow,
)
from batchbridge.ledger.quarantine_store import QuarantineFilter, file_names, find_rows
from batchbridge.steward.access import ROW, StewardAccess
from batchbridge.steward.audited_filters import audited_filters

BULK_ACTIONS = ("release", "discard")


@dataclass(frozen=True)
class BulkSelection:
    """The rows a bulk release or discard would take, counted; nothing changed yet."""

    action: str
    feed: str | None
    file_id: str | None
    reason: str | None
    ids: list[int]
    not_ready: int
    """Rows whose file a nightly run has not reconciled yet: a release skips them."""
    by_file: dict[str, int]
    """File name -> rows."""
    by_reason: dict[str, int]

    @property
    def total(self) -> int:
        return len(self.ids)


class BulkActions(StewardAccess):
    """bulk_selection, bulk_discard of StewardService."""

    def _bulk_tenants(self, action: str, feed: str | None, file_id: str | None) -> list[str]:
        """Tenants of the feed and file asked for, each checked for `action`."""
        if action not in BULK_ACTIONS:
            raise StewardError("a bulk action is release or discard")
        if feed is None and file_id is None:
            raise StewardError(f"a bulk {action} needs a feed or a file")
        tenants: list[str] = []
        if file_id is not None:
            tenants.append(self.file_for(file_id, action).tenant)
        if feed is not None:
            feed_tenant = self._feed_tenant(feed)
            if feed_tenant is None:
                raise StewardError(f"no such feed among your tenants' feeds; {action} needs one")
            self.require(feed_tenant, action, "feed", [feed])
            tenants.append(feed_tenant)
        return sorted(set(tenants))

    def bulk_selection(
        self,
        action: str,
        *,
        feed: str | None = None,
        file_id: str | None = None,
        reason: str | None = None,
    ) -> BulkSelection:
        """The quarantined rows a release or discard by feed, file and reason would take.

        Checked with the action's role (a viewer is refused here, before any confirmation)
        and audited as a list; nothing changes.
        """
        tenants = self._bulk_tenants(action, feed, file_id)
        where = QuarantineFilter(tenants=tenants, feed=feed, file_id=file_id, reason=reason)
        with self.store.session() as s:
            rows = find_rows(s, where)
            names = file_names(s, [r.file_id for r in rows])
            ready = set(
                s.scalars(
                    select(LedgerFile.id).where(
                        LedgerFile.id.in_({r.file_id for r in rows}),
                        LedgerFile.state == FileState.RECONCILED,
                    )
                )
            )
            filters = audited_filters(
                {"feed": feed, "file_id": file_id, "reason": reason},
                free_text=("feed", "reason"),
                confirmed=self.confirmed_filters(feed=feed, reason=reason, matched=len(rows)),
            )
            for tenant in tenants:
                append_event(
                    s,
                    actor=self.actor,
                    action="list",
                    tenant=tenant,
                    object_type=ROW,
                    object_ids=[r.id for r in rows if r.tenant == tenant],
                    details={
                        "filters": filters,
                        "matched": len(rows),
                        "for": action,
                    },
                )
        reasons: Counter[str] = Counter(reason for r in rows for reason in r.reasons)
        return BulkSelection(
            action=action,
            feed=feed,
            file_id=file_id,
            reason=reason,
            ids=[r.id for r in rows],
            not_ready=sum(r.file_id not in ready for r in rows),
            by_file=dict(Counter(names.get(r.file_id, "?") for r in rows)),
            by_reason=dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
        )

    def bulk_discard(
        self,
        *,
        why: str,
        feed: str | None = None,
        file_id: str | None = None,
        reason: str | None = None,
    ) -> list[int]:
        """Discard every quarantined row the selection takes, at once; returns their ids.

        A row settled or changed by someone else meanwhile is simply no longer selected.
        """
        if not why or not why.strip():
            raise StewardError("discard needs a reason: it is written to the audit log")
        tenants = self._bulk_tenants("discard", feed, file_id)
        where = QuarantineFilter(tenants=tenants, feed=feed, file_id=file_id, reason=reason)
        with self.store.session() as s:
            ids = [r.id for r in find_rows(s, where)]
        now = utcnow()
        with self.store.session() as s:
            # Re-read under a row lock (PostgreSQL) in a fresh session: rows settled since
            # the selection are left out rather than failing the whole discard.
            locked = {
                row.id: row
                for row in s.scalars(
                    select(QuarantinedRow)
                    .where(
                        QuarantinedRow.id.in_(ids),
                        QuarantinedRow.status == QuarantineStatus.QUARANTINED,
                    )
                    .with_for_update()
                )
            }
            for row in locked.values():
                row.status = QuarantineStatus.DISCARDED
                row.settled_by = self.actor
                row.settled_at = now
                row.settle_reason = why.strip()
            for tenant in tenants:
                tenant_ids = sorted(i for i, r in locked.items() if r.tenant == tenant)
                if tenant_ids:
                    append_event(
                        s,
                        actor=self.actor,
                        action="discard",
                        tenant=tenant,
                        object_type=ROW,
                        object_ids=tenant_ids,
                        reason=why.strip(),
                        details={"rows": len(tenant_ids)},
                    )
        return sorted(locked)
