"""Steward CSV round trip: export rows for offline fixing, import the edits all or nothing."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from batchbridge.config import load_feed
from batchbridge.errors import ImportRejectedError, StewardError
from batchbridge.ledger.audit import append_event
from batchbridge.ledger.models import QuarantineStatus
from batchbridge.ledger.quarantine_store import QuarantineFilter, find_rows, rows_by_id
from batchbridge.steward.access import ROW, StewardAccess
from batchbridge.steward.csv_files import read_import, safe_names, write_export


class CsvExchange(StewardAccess):
    """export_rows / import_rows of StewardService."""

    def export_rows(
        self,
        path: Path,
        *,
        ids: list[int] | None = None,
        feed: str | None = None,
        reason: str | None = None,
        why: str,
    ) -> int:
        """Write selected quarantined rows to a new 0600 CSV for offline fixing; audited.

        Columns: quarantine_id + the feed schema's columns; formula-like cells are
        neutralised with a leading quote. Returns the rows written (0: no file).
        """
        if not why or not why.strip():
            raise StewardError("export needs a reason (--why): it is written to the audit log")
        if ids and (feed or reason):
            raise StewardError("export takes either row ids or --feed/--reason, not both")
        if ids:
            with self.store.session() as s:
                found = rows_by_id(s, ids)
            rows = self.checked_rows(found, list(dict.fromkeys(ids)), "export")
            for row in rows:
                self._require_quarantined(row)
        elif feed:
            tenant = load_feed(feed, self.config_dir).config.tenant
            self.require(tenant, "export", "feed", [feed])
            with self.store.session() as s:
                rows = find_rows(s, QuarantineFilter(tenants=[tenant], feed=feed, reason=reason))
        else:
            raise StewardError("export needs row ids or a feed")
        if not rows:
            return 0
        contexts = {f: self.feed_for(f, t) for f, t in {(r.feed, r.tenant) for r in rows}}
        schemas = {ctx.schema.columns for ctx in contexts.values()}
        if len(schemas) != 1:
            raise StewardError("export rows of one kind of feed at a time (their columns differ)")
        columns = next(iter(schemas))
        decrypted = [(row.id, contexts[row.feed].decrypt(row)) for row in rows]
        by_tenant: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            by_tenant[row.tenant].append(row.id)
        created = False
        try:
            with self.store.session() as s:
                for tenant, tenant_ids in by_tenant.items():
                    append_event(
                        s,
                        actor=self.actor,
                        action="export",
                        tenant=tenant,
                        object_type=ROW,
                        object_ids=tenant_ids,
                        reason=why.strip(),
                        # Counts only: a file name is free text and might name a patient.
                        details={"rows": len(tenant_ids)},
                    )
                # Written inside the audit's transaction: if writing fails the event rolls
                # back, and if the commit fails the file is removed (no unaudited plaintext).
                written = write_export(
                    path, columns, decrypted, {row.id: list(row.reasons) for row in rows}
                )
                created = True
        except BaseException:
            if created:
                path.unlink(missing_ok=True)
            raise
        return written

    def import_rows(self, path: Path, *, why: str | None = None) -> int:
        """Apply an edited export by quarantine id, all or nothing; returns the rows changed.

        Unknown ids, ids of other tenants and rows no longer quarantined refuse the
        whole file (ImportRejectedError): nothing is applied.
        """
        parsed = read_import(path)
        ids = [r.quarantine_id for r in parsed.rows]
        if not ids:
            return 0
        with self.store.session() as s:
            found = rows_by_id(s, ids)
        unknown = [i for i in ids if i not in found]
        foreign: dict[str, list[int]] = defaultdict(list)
        for i in ids:
            if i in found and self.directory.role(self.actor, found[i].tenant) is None:
                foreign[found[i].tenant].append(i)
        for tenant, tenant_ids in foreign.items():
            self._audit_denied(tenant, "import", ROW, tenant_ids)
        settled = [i for i in ids if i in found and found[i].status != QuarantineStatus.QUARANTINED]
        problems = []
        if unknown or foreign:
            refused = sorted([*unknown, *(i for t in foreign.values() for i in t)])
            problems.append(
                f"ids {', '.join(map(str, refused))} unknown or not in your tenants' rows"
            )
        if settled:
            problems.append(
                f"ids {', '.join(map(str, sorted(settled)))} are released or discarded already"
            )
        if problems:
            raise ImportRejectedError(
                f"{path.name}: refused whole, nothing applied: {'; '.join(problems)}"
            )
        for tenant in sorted({found[i].tenant for i in ids}):
            self.require(tenant, "import", ROW, [i for i in ids if found[i].tenant == tenant])
        contexts = {f: self.feed_for(f, t) for f, t in {(r.feed, r.tenant) for r in found.values()}}
        for feed, ctx in contexts.items():
            extra = sorted(set(parsed.columns) - set(ctx.schema.columns))
            if extra:
                raise ImportRejectedError(
                    f"{path.name}: refused whole, nothing applied: columns "
                    f"{safe_names(extra)} are not columns of feed {feed}"
                )
        changed_by_tenant: dict[str, list[int]] = defaultdict(list)
        columns_by_tenant: dict[str, set[str]] = defaultdict(set)
        # One transaction: any failure (a row settled meanwhile, a bad ciphertext) undoes all.
        with self.store.session() as s:
            locked = self._locked(s, ids)
            for entry in parsed.rows:
                row = locked[entry.quarantine_id]
                changed = self._apply(s, contexts[row.feed], row, entry.values, source="import")
                if changed:
                    changed_by_tenant[row.tenant].append(row.id)
                    columns_by_tenant[row.tenant].update(changed)
            for tenant, tenant_ids in changed_by_tenant.items():
                append_event(
                    s,
                    actor=self.actor,
                    action="import",
                    tenant=tenant,
                    object_type=ROW,
                    object_ids=tenant_ids,
                    reason=why,
                    details={
                        "rows_changed": len(tenant_ids),
                        "columns": sorted(columns_by_tenant[tenant]),
                    },
                )
        return sum(len(v) for v in changed_by_tenant.values())
