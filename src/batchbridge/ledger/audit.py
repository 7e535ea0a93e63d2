"""The audit log: append-only events chained by SHA-256, and the check that proves it."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, cast, func, select, update
from sqlalchemy.orm import Session

from batchbridge.errors import AuditChainError
from batchbridge.ledger.models import AuditEvent, AuditHead, utcnow

GENESIS_HASH = "0" * 64


def event_hash(
    *,
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    tenant: str,
    object_type: str,
    object_ids: Sequence[str],
    reason: str | None,
    details: dict[str, Any] | None,
) -> str:
    """SHA-256 over the previous hash and every field, in a canonical JSON form."""
    canonical = json.dumps(
        {
            "prev_hash": prev_hash,
            # Stored timestamps may come back without tzinfo (SQLite): hash the UTC wall time.
            "at": at.replace(tzinfo=None).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "tenant": tenant,
            "object_type": object_type,
            "object_ids": list(object_ids),
            "reason": reason,
            "details": details,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def append_event(
    session: Session,
    *,
    actor: str,
    action: str,
    tenant: str,
    object_type: str,
    object_ids: Sequence[str | int],
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (it commits or rolls back with the action).

    Events carry who, when, what and ids; never patient values.
    """
    head = session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(events=AuditHead.events + 1)
        .returning(AuditHead.last_hash, AuditHead.events)
    ).first()
    if head is None:
        session.add(AuditHead(id=1, last_hash=GENESIS_HASH, events=1))
        session.flush()
        prev_hash = GENESIS_HASH
    else:
        prev_hash = head[0]
    at = utcnow()
    ids = [str(i) for i in object_ids]
    digest = event_hash(
        prev_hash=prev_hash,
        at=at,
        actor=actor,
        action=action,
        tenant=tenant,
        object_type=object_type,
        object_ids=ids,
        reason=reason,
        details=details,
    )
    event = AuditEvent(
        at=at,
        actor=actor,
        action=action,
        tenant=tenant,
        object_type=object_type,
        object_ids=ids,
        reason=reason,
        details=details,
        prev_hash=prev_hash,
        hash=digest,
    )
    session.add(event)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=digest))
    return event


@dataclass(frozen=True)
class ChainReport:
    """What `audit verify` found: events checked and every break, by event id."""

    events: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(session: Session) -> ChainReport:
    """Recompute every hash and link; report edited, inserted and deleted events."""
    problems: list[str] = []
    prev_hash = GENESIS_HASH
    count = 0
    for event in session.scalars(select(AuditEvent).order_by(AuditEvent.id)):
        count += 1
        if event.prev_hash != prev_hash:
            problems.append(
                f"event {event.id}: does not follow the previous event "
                "(an event was inserted or deleted before it)"
            )
        expected = event_hash(
            prev_hash=event.prev_hash,
            at=event.at,
            actor=event.actor,
            action=event.action,
            tenant=event.tenant,
            object_type=event.object_type,
            object_ids=event.object_ids,
            reason=event.reason,
            details=event.details,
        )
        if event.hash != expected:
            problems.append(f"event {event.id}: content does not match its hash (edited)")
        prev_hash = event.hash
    head = session.get(AuditHead, 1)
    head_hash, head_count = (head.last_hash, head.events) if head else (GENESIS_HASH, 0)
    if head_count != count or head_hash != prev_hash:
        problems.append(
            f"log holds {count} events ending {prev_hash[:12]}, the head records "
            f"{head_count} ending {head_hash[:12]} (events deleted or added at the end)"
        )
    return ChainReport(events=count, problems=problems)


def require_intact_chain(session: Session) -> ChainReport:
    """verify_chain, raising AuditChainError when anything is wrong."""
    report = verify_chain(session)
    if not report.ok:
        raise AuditChainError("; ".join(report.problems))
    return report


OBJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
"""What an object id a query may ask for looks like: row numbers, uuids, feed names."""


@dataclass(frozen=True)
class EventFilter:
    """Which audit events to list (newest first); every given field narrows."""

    tenants: Sequence[str]
    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    exclude_actions: Sequence[str] = ()
    since: datetime | None = None
    until: datetime | None = None
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True)
class EventPage:
    """The listed events and how many matched in all."""

    events: list[AuditEvent]
    total: int


def find_events(session: Session, where: EventFilter) -> EventPage:
    """Events of `where.tenants` matching every filter, newest first, one page of them."""
    query = select(AuditEvent).where(AuditEvent.tenant.in_(list(where.tenants)))
    for column, wanted in (
        (AuditEvent.actor, where.actor),
        (AuditEvent.action, where.action),
        (AuditEvent.object_type, where.object_type),
    ):
        if wanted is not None:
            query = query.where(column == wanted)
    if where.exclude_actions:
        query = query.where(AuditEvent.action.not_in(list(where.exclude_actions)))
    if where.object_id is not None:
        if not OBJECT_ID.fullmatch(where.object_id):
            return EventPage(events=[], total=0)
        # object_ids is a JSON list of strings: '"<id>"' in its text is exactly one element
        # equal to the id (ids of OBJECT_ID's characters need no JSON escaping). `_` is a
        # LIKE wildcard: escaped. Text the same way on SQLite and PostgreSQL.
        quoted = json.dumps(where.object_id).replace("_", "\\_")
        query = query.where(cast(AuditEvent.object_ids, Text).like(f"%{quoted}%", escape="\\"))
    # UTC: SQLite keeps the ledger's UTC times without their offset.
    if where.since is not None:
        query = query.where(AuditEvent.at >= where.since.astimezone(UTC))
    if where.until is not None:
        query = query.where(AuditEvent.at < where.until.astimezone(UTC))
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    page = query.order_by(AuditEvent.id.desc()).offset(max(where.offset, 0)).limit(where.limit)
    return EventPage(events=list(session.scalars(page)), total=total)
