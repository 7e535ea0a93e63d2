"""Exact search of quarantined rows by record id, through a keyed hash; every search audited.

The record id (an accession or member number) is an identifier, so it is stored only as
a keyed hash (RowCipher.lookup_hash) next to the encrypted row. A search hashes the
asked id under each key the feed knows; rows quarantined before the hash existed are
decrypted and compared instead. The audit event names who searched and what matched,
never the id searched for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select

from batchbridge.ledger.audit import append_event
from batchbridge.ledger.models import QuarantinedRow
from batchbridge.steward.access import ROW, StewardAccess


class RecordSearch(StewardAccess):
    """find_record_ids of StewardService."""

    def find_record_ids(
        self, record_id: str, *, tenants: Sequence[str], feed: str | None = None
    ) -> list[int]:
        """Ids of rows (any status) of `tenants` whose record id is exactly `record_id`."""
        wanted = record_id.strip()
        with self.store.session() as s:
            query = select(QuarantinedRow.feed, QuarantinedRow.tenant).where(
                QuarantinedRow.tenant.in_(list(tenants))
            )
            if feed is not None:
                query = query.where(QuarantinedRow.feed == feed)
            feeds = sorted({(name, tenant) for name, tenant in s.execute(query.distinct())})
        matched: dict[str, list[int]] = defaultdict(list)
        for feed_name, tenant in feeds:
            ctx = self.feed_for(feed_name, tenant)
            hashes = ctx.keyring.lookup_hashes(wanted) if wanted else set()
            column = ctx.schema.natural_key[0]
            with self.store.session() as s:
                in_feed = (QuarantinedRow.feed == feed_name) & (QuarantinedRow.tenant == tenant)
                matched[tenant] += s.scalars(
                    select(QuarantinedRow.id).where(
                        in_feed, QuarantinedRow.record_hash.in_(sorted(hashes))
                    )
                )
                unhashed = s.scalars(
                    select(QuarantinedRow).where(in_feed, QuarantinedRow.record_hash.is_(None))
                )
                matched[tenant] += [
                    row.id
                    for row in unhashed
                    if (ctx.decrypt(row).get(column) or "").strip() == wanted
                ]
        with self.store.session() as s:
            for tenant in tenants:
                append_event(
                    s,
                    actor=self.actor,
                    action="search",
                    tenant=tenant,
                    object_type=ROW,
                    object_ids=sorted(matched[tenant]),
                    # What was searched for is an identifier: only that a search by it happened.
                    details={"by": "record_id", "matched": len(matched[tenant])},
                )
        return sorted(i for ids in matched.values() for i in ids)
