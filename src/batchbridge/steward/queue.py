"""The steward's work queue: one page of rows with reason counts, and the recent runs.

What the workbench lists, under the same access rules and audit as `quarantine list`:
ids, positions, statuses, reasons and counts, never values.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from batchbridge.config.stewards import required_role
from batchbridge.errors import AccessDeniedError, StewardError
from batchbridge.ledger.audit import append_event
from batchbridge.ledger.models import (
    QuarantinedRow,
    QuarantineStatus,
    utcnow,
)
from batchbridge.ledger.quarantine_store import (
    QuarantineFilter,
    QuarantineSummary,
    find_slice,
    summarize,
)
from batchbridge.ledger.runs_query import RunFilter, RunSummary, as_utc, list_runs, resolve
from batchbridge.steward.access import ROW
from batchbridge.steward.audited_filters import UNKNOWN_TENANT, audited_filters
from batchbridge.steward.search import RecordSearch

MAX_PAGE = 500
"""Most rows one queue page lists."""


@dataclass(frozen=True)
class QueuePage:
    """One page of the queue: its rows, how many match in all, their reasons counted."""

    rows: list[QuarantineSummary]
    total: int
    offset: int
    limit: int
    reason_counts: dict[str, int]


@dataclass(frozen=True)
class QueueChoices:
    """What the queue's filters offer: the person's tenants and the feeds with rows."""

    tenants: list[str]
    feeds: list[str]


class QueueView(RecordSearch):
    """queue, queue_choices, full_id, recent_runs of StewardService."""

    def listing_tenants(self, tenant: str | None, feed: str | None) -> list[str]:
        """Tenants a listing covers: the one asked for (checked) or all the person may list."""
        if tenant is not None:
            known = {t for roles in self.directory.stewards.values() for t in roles}
            if tenant not in known:
                # Not written to the audit log or echoed as typed: the box may have received
                # anything. The refusal itself is still audited.
                self._audit_denied(UNKNOWN_TENANT, "list", "tenant", [])
                raise AccessDeniedError(f"{self.actor} has no steward role for that tenant")
            self.require(tenant, "list", "tenant", [tenant])
            tenants = [tenant]
        else:
            tenants = self.directory.tenants(self.actor, required_role("list"))
        if feed is not None and (feed_tenant := self._feed_tenant(feed)) is not None:
            self.require(feed_tenant, "list", "feed", [feed])
        return tenants

    def queue(
        self,
        *,
        tenant: str | None = None,
        feed: str | None = None,
        file_id: str | None = None,
        run_id: str | None = None,
        reason: str | None = None,
        status: str | None = QuarantineStatus.QUARANTINED,
        older_than: timedelta | None = None,
        newer_than: timedelta | None = None,
        record_id: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> QueuePage:
        """One page of matching rows (ids, reasons, status; no values); audited as a list."""
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise StewardError(f"a page holds 1 to {MAX_PAGE} rows from offset 0 on")
        return self.listing(
            tenant=tenant,
            feed=feed,
            file_id=file_id,
            run_id=run_id,
            reason=reason,
            status=status,
            older_than=older_than,
            newer_than=newer_than,
            record_id=record_id,
            offset=offset,
            limit=limit,
        )

    def listing(
        self,
        *,
        tenant: str | None = None,
        feed: str | None = None,
        file_id: str | None = None,
        run_id: str | None = None,
        reason: str | None = None,
        status: str | None = QuarantineStatus.QUARANTINED,
        older_than: timedelta | None = None,
        newer_than: timedelta | None = None,
        record_id: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> QueuePage:
        """Matching rows from `offset` on (all of them without `limit`); audited as a list.

        The queue's pages and `batchbridge quarantine list` both come through here.
        """
        tenants = self.listing_tenants(tenant, feed)
        ids = None
        if record_id is not None:
            ids = self.find_record_ids(record_id, tenants=tenants, feed=feed)
        now = utcnow()
        where = QuarantineFilter(
            tenants=tenants,
            feed=feed,
            file_id=file_id,
            run_id=run_id,
            reason=reason,
            status=status,
            ids=ids,
            quarantined_before=now - older_than if older_than is not None else None,
            quarantined_after=now - newer_than if newer_than is not None else None,
        )
        with self.store.session() as s:
            found = find_slice(
                s, where, offset=offset, limit=limit if limit is not None else sys.maxsize
            )
            shown = summarize(s, found.rows)
            filters = audited_filters(
                {
                    "feed": feed,
                    "file_id": file_id,
                    "run_id": run_id,
                    "reason": reason,
                    "status": status,
                    "older_than_s": older_than and int(older_than.total_seconds()),
                    "newer_than_s": newer_than and int(newer_than.total_seconds()),
                    "offset": offset,
                    "limit": limit,
                },
                free_text=("feed", "reason"),
                confirmed=self.confirmed_filters(feed=feed, reason=reason, matched=found.total),
            )
            for listed_tenant in tenants:
                append_event(
                    s,
                    actor=self.actor,
                    action="list",
                    tenant=listed_tenant,
                    object_type=ROW,
                    object_ids=[r.id for r in shown if r.tenant == listed_tenant],
                    details={"filters": filters, "matched": found.total},
                )
        return QueuePage(
            rows=shown,
            total=found.total,
            offset=offset,
            limit=limit if limit is not None else found.total,
            reason_counts=found.reason_counts,
        )

    def queue_choices(self) -> QueueChoices:
        """The person's tenants and the feeds of theirs that have quarantined rows."""
        tenants = self.directory.tenants(self.actor, required_role("list"))
        with self.store.session() as s:
            feeds = s.scalars(
                select(QuarantinedRow.feed)
                .where(QuarantinedRow.tenant.in_(tenants))
                .distinct()
                .order_by(QuarantinedRow.feed)
            )
            return QueueChoices(tenants=tenants, feeds=list(feeds))

    def full_id(self, kind: str, text: str, action: str = "list") -> str:
        """The full run or file id `text` (an id or unique prefix) names among the
        person's tenants; IdLookupError (never echoing `text`) otherwise."""
        tenants = self.directory.tenants(self.actor, required_role(action))
        with self.store.session() as s:
            return resolve(s, text, kinds=(kind,), tenants=tenants).id

    def recent_runs(
        self, *, feed: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[RunSummary]:
        """The newest runs (nightly and release) of the person's tenants: ids and counts only."""
        runs: list[RunSummary] = []
        with self.store.session() as s:
            for tenant in self.directory.tenants(self.actor, required_role("list")):
                where = RunFilter(feed=feed, tenant=tenant, status=status, limit=limit)
                runs += list_runs(s, where)
        runs.sort(key=lambda run: (as_utc(run.started_at), run.id), reverse=True)
        return runs[:limit]


def age_bounds(code: str) -> tuple[timedelta | None, timedelta | None]:
    """(older_than, newer_than) of an age filter code; StewardError for an unknown one."""
    try:
        return AGE_FILTERS[code][1:]
    except KeyError:
        raise StewardError("unknown age filter") from None


AGE_FILTERS: dict[str, tuple[str, timedelta | None, timedelta | None]] = {
    "": ("any age", None, None),
    "lt1d": ("under a day", None, timedelta(days=1)),
    "lt7d": ("under a week", None, timedelta(days=7)),
    "gt7d": ("over a week", timedelta(days=7), None),
    "gt30d": ("over 30 days", timedelta(days=30), None),
}
"""Age filter code -> (label, older than, newer than)."""


def quarantined_age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest whole unit: 45s, 12m, 5h, 3d ("-" when unknown)."""
    if moment is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - as_utc(moment)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
