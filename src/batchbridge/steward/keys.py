"""Quarantine key rotation: re-encrypt a feed's rows and edits under its current key."""

from __future__ import annotations

from sqlalchemy import select

from batchbridge.config import load_feed
from batchbridge.ledger.audit import append_event
from batchbridge.ledger.crypto import row_associated_data
from batchbridge.ledger.models import QuarantinedRow, QuarantineEdit
from batchbridge.ledger.quarantine_store import edit_associated_data, encrypted_of
from batchbridge.steward.access import StewardAccess, record_hash

ROTATE_BATCH = 500
"""Rows re-encrypted per transaction: a long rotation never holds one huge transaction."""


class KeyRotation(StewardAccess):
    """rotate_keys of StewardService."""

    def rotate_keys(self, feed: str) -> int:
        """Re-encrypt every row and edit of `feed` not under the current key (admin role).

        Batches commit one by one; rows not yet reached keep opening with the previous
        key meanwhile, and a rerun continues where an interrupted one stopped.
        """
        tenant = load_feed(feed, self.config_dir).config.tenant
        self.require(tenant, "rotate_keys", "feed", [feed])
        ctx = self.feed_for(feed, tenant)
        current = ctx.keyring.current.key_id
        rows_done = 0
        edits_done = 0
        while True:
            with self.store.session() as s:
                batch = list(
                    s.scalars(
                        select(QuarantinedRow)
                        .where(QuarantinedRow.feed == feed, QuarantinedRow.key_id != current)
                        .order_by(QuarantinedRow.id)
                        .limit(ROTATE_BATCH)
                        .with_for_update()
                    )
                )
                for row in batch:
                    aad = row_associated_data(row.file_id, row.row_number)
                    values = ctx.decrypt(row)
                    fresh = ctx.keyring.encrypt(values, aad)
                    row.key_id, row.nonce, row.ciphertext = (
                        fresh.key_id,
                        fresh.nonce,
                        fresh.ciphertext,
                    )
                    row.record_hash = record_hash(ctx, values)
            rows_done += len(batch)
            if len(batch) < ROTATE_BATCH:
                break
        while True:
            with self.store.session() as s:
                edits = list(
                    s.scalars(
                        select(QuarantineEdit)
                        .join(QuarantinedRow, QuarantinedRow.id == QuarantineEdit.quarantine_id)
                        .where(QuarantinedRow.feed == feed, QuarantineEdit.key_id != current)
                        .order_by(QuarantineEdit.id)
                        .limit(ROTATE_BATCH)
                        .with_for_update()
                    )
                )
                for edit in edits:
                    aad = edit_associated_data(edit.quarantine_id)
                    fresh = ctx.keyring.encrypt(ctx.keyring.decrypt(encrypted_of(edit), aad), aad)
                    edit.key_id, edit.nonce, edit.ciphertext = (
                        fresh.key_id,
                        fresh.nonce,
                        fresh.ciphertext,
                    )
            edits_done += len(edits)
            if len(edits) < ROTATE_BATCH:
                break
        with self.store.session() as s:
            append_event(
                s,
                actor=self.actor,
                action="rotate_keys",
                tenant=tenant,
                object_type="feed",
                object_ids=[feed],
                details={"key_id": current, "rows": rows_done, "edits": edits_done},
            )
        return rows_done
