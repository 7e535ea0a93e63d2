"""Release mechanics: decrypt, re-validate with today's rules, load with lineage, settle."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import polars as pl
from sqlalchemy import select

from batchbridge.config import load_feed
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.targets.base import Target
from batchbridge.connectors.targets.loading import TargetLoad, load_into_targets, reconcile_counts
from batchbridge.connectors.targets.registry import open_target
from batchbridge.crashpoints import crash_point
from batchbridge.errors import BatchbridgeError, StewardError, withhold_unexpected_errors
from batchbridge.ledger.audit import append_event
from batchbridge.ledger.models import (
    FileState,
    LedgerFile,
    QuarantinedRow,
    QuarantineStatus,
    RunStatus,
    utcnow,
)
from batchbridge.ledger.quarantine_store import (
    QuarantineFilter,
    balance_of,
    find_rows,
    reason_matches,
    rows_by_id,
)
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.feed_context import FeedContext
from batchbridge.steward.release_report import FileRelease, ReleaseReport, ReleaseRun
from batchbridge.validations.base import (
    REASONS_COLUMN,
    ROW_COLUMN,
    FeedSchema,
    TransformContext,
    ValidationContext,
)
from batchbridge.validations.mapping import load_feed_mappings
from batchbridge.validations.parse import file_date_from_name
from batchbridge.validations.transform import transform_valid_rows

if TYPE_CHECKING:
    from batchbridge.steward.service import StewardService


def rows_frame(
    rows: Sequence[tuple[int, Mapping[str, str | None]]], columns: Sequence[str]
) -> pl.DataFrame:
    """Decrypted rows (row number, values) as the parser would have produced them."""
    data: dict[str, list[str | None]] = {c: [values.get(c) for _, values in rows] for c in columns}
    frame = pl.DataFrame(data, schema={c: pl.String for c in columns})
    return frame.with_columns(
        pl.Series(ROW_COLUMN, [number for number, _ in rows], dtype=pl.UInt32)
    )


@dataclass(frozen=True)
class Revalidation:
    """Rows that now pass (file columns + ROW_COLUMN) and new reasons of those that do not."""

    valid: pl.DataFrame
    reasons: dict[int, list[str]]


def revalidate(frame: pl.DataFrame, schema: FeedSchema, ctx: ValidationContext) -> Revalidation:
    """Apply the feed's rules (with today's mappings) to rows taken out of quarantine."""
    result = schema.validate(frame, ctx)
    reasons = {
        int(number): [str(r) for r in found]
        for number, found in result.quarantined.select(ROW_COLUMN, REASONS_COLUMN).iter_rows()
    }
    return Revalidation(valid=result.valid, reasons=reasons)


_revalidate = withhold_unexpected_errors("validate")(revalidate)
_transform = withhold_unexpected_errors("transform")(transform_valid_rows)


def _aware(moment: datetime) -> datetime:
    # SQLite hands timestamps back without a zone; the ledger stores UTC only.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def validation_context(
    ctx: FeedContext, file: LedgerFile, mappings: dict[str, pl.DataFrame]
) -> ValidationContext:
    """The facts a file's rows are validated with today: its date, the feed's zone, `mappings`."""
    config = ctx.loaded.config
    seen = _aware(file.first_seen_at).astimezone(ZoneInfo(config.timezone)).date()
    return ValidationContext(
        tenant=config.tenant,
        file_date=file_date_from_name(file.name, seen),
        timezone=config.timezone,
        mappings=mappings,
    )


@dataclass
class FeedRelease:
    """Releases one feed's rows under one ledger run, file by file."""

    store: LedgerStore
    ctx: FeedContext
    actor: str
    run: ReleaseRun
    why: str | None
    mappings: dict[str, pl.DataFrame]
    transform_ctx: TransformContext
    targets: list[tuple[Target, list[str]]]

    def release_file(self, file: LedgerFile, rows: Sequence[QuarantinedRow]) -> FileRelease:
        """Re-validate a file's selected rows, load the valid ones, settle all; errors recorded."""
        report = FileRelease(file_id=file.id, file_name=file.name, selected=len(rows))
        stage = "decrypt"
        try:
            decrypted = [(row.row_number, self.ctx.decrypt(row)) for row in rows]
            stage = "validate"
            vctx = validation_context(self.ctx, file, self.mappings)
            frame = rows_frame(decrypted, self.ctx.schema.columns)
            del decrypted  # patient values: the frame is all that is needed from here
            checked = _revalidate(frame, self.ctx.schema, vctx)
            del frame
            loads: list[TargetLoad] = []
            if checked.valid.height:
                stage = "transform"
                out = _transform(checked.valid, self.ctx.schema, self.transform_ctx)
                stage = "load"
                loads = self._load(file, out, report)
                crash_point("mid_release")
                stage = "reconcile"
                reconcile_counts(
                    rows_read=len(rows),
                    rows_declared=None,
                    rows_valid=checked.valid.height,
                    rows_quarantined=len(checked.reasons),
                    loads=[done.result for done in loads],
                )
            stage = "settle"
            valid_numbers = {int(n) for n in checked.valid.get_column(ROW_COLUMN).to_list()}
            self._settle(file, rows, valid_numbers, checked.reasons, loads, report)
            self.store.record_run_file(
                run_id=self.run.run_id,
                file_id=file.id,
                outcome="released",
                is_rerun=True,
                stage_seconds={},
            )
        except BatchbridgeError as exc:
            report.failed_stage = stage
            report.reason = exc.reason
            report.message = str(exc)
        with self.store.session() as s:
            report.balanced = balance_of(s, s.get_one(LedgerFile, file.id)).balanced
        return report

    def _load(self, file: LedgerFile, rows: pl.DataFrame, report: FileRelease) -> list[TargetLoad]:
        file_id = file.id
        # Released rows are a delivery of their own: a target writing one extract per
        # source file (outbound SFTP) must not replace the file's first extract with them.
        release_name = f"{file.name.split('.')[0]}_release_{self.run.run_id[:8]}"

        def loaded(done: TargetLoad) -> None:
            self.store.record_load(run_id=self.run.run_id, file_id=file_id, load=done.record())
            report.targets[done.result.target] = done.counts()
            report.load_ids.append(done.result.load_id)

        return load_into_targets(
            self.targets,
            tenant=self.ctx.tenant,
            natural_key=self.ctx.schema.natural_key,
            file_id=file_id,
            rows=rows,
            on_loaded=loaded,
            feed=self.ctx.loaded.config.feed,
            source_name=release_name,
        )

    def _settle(
        self,
        file: LedgerFile,
        rows: Sequence[QuarantinedRow],
        valid_numbers: set[int],
        reasons: dict[int, list[str]],
        loads: Sequence[TargetLoad],
        report: FileRelease,
    ) -> None:
        """Mark loaded rows released and give still-invalid ones their new reasons, audited.

        A row settled or edited by someone else since it was read (its nonce changed) is
        left alone: the next release takes it, and the target upsert keeps that safe.
        """
        nonces = {row.id: row.nonce for row in rows}
        released: list[int] = []
        still: list[int] = []
        now = utcnow()
        load_id = loads[0].result.load_id if loads else None
        with self.store.session() as s:
            fresh = {
                row.id: row
                for row in s.scalars(
                    select(QuarantinedRow)
                    .where(QuarantinedRow.id.in_(list(nonces)))
                    .with_for_update()
                )
            }
            for row in rows:
                current = fresh.get(row.id)
                if (
                    current is None
                    or current.status != QuarantineStatus.QUARANTINED
                    or current.nonce != nonces[row.id]
                ):
                    continue
                if row.row_number in valid_numbers:
                    current.status = QuarantineStatus.RELEASED
                    current.released_load_id = load_id
                    current.settled_by = self.actor
                    current.settled_at = now
                    released.append(row.id)
                else:
                    current.reasons = reasons.get(row.row_number, current.reasons)
                    still.append(row.id)
            append_event(
                s,
                actor=self.actor,
                action="release",
                tenant=self.ctx.tenant,
                object_type="quarantined_row",
                object_ids=[*released, *still],
                reason=self.why,
                details={
                    "run_id": self.run.run_id,
                    "file_id": file.id,
                    "load_ids": [done.result.load_id for done in loads],
                    "released": released,
                    "still_quarantined": still,
                },
            )
            crash_point("mid_release_settle", s.flush)
        report.released = len(released)
        report.still_quarantined = len(still)
        report.count_reasons({n: r for n, r in reasons.items()})


def release_feed_rows(
    store: LedgerStore,
    ctx: FeedContext,
    *,
    actor: str,
    files: Sequence[tuple[LedgerFile, Sequence[QuarantinedRow]]],
    flow_run_id: str | None,
    why: str | None = None,
) -> ReleaseRun:
    """Release a feed's rows under a new ledger run (is_rerun) whose report says what happened."""
    config = ctx.loaded.config
    run_id = store.start_run(
        tenant=config.tenant, feed=config.feed, flow_run_id=flow_run_id, is_rerun=True
    )
    run = ReleaseRun(run_id=run_id, tenant=config.tenant, feed=config.feed, requested_by=actor)
    try:
        with ExitStack() as stack:
            mappings = load_feed_mappings(ctx.loaded, ctx.schema)
            transform_ctx = TransformContext(
                tenant=config.tenant,
                timezone=config.timezone,
                mappings=mappings,
                pseudonym_key=resolve_secret(config.pseudonym_key, base_dir=ctx.loaded.base_dir)
                .get_secret_value()
                .encode(),
            )
            targets: list[tuple[Target, list[str]]] = []
            for target_config in config.targets:
                target = open_target(ctx.loaded, target_config)
                stack.callback(target.close)
                targets.append((target, list(target_config.columns)))
            releaser = FeedRelease(
                store=store,
                ctx=ctx,
                actor=actor,
                run=run,
                why=why,
                mappings=mappings,
                transform_ctx=transform_ctx,
                targets=targets,
            )
            for file, rows in files:
                run.files.append(releaser.release_file(file, rows))
    except BatchbridgeError as exc:
        run.error = {"stage": "setup", "reason": exc.reason, "message": str(exc)}
    failed = run.error is not None or any(f.failed_stage for f in run.files)
    run.status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
    crash_point("release_before_report")
    store.finish_run(run_id, status=RunStatus(run.status), report=run.to_dict())
    return run


def release_rows(
    service: StewardService,
    *,
    ids: list[int] | None = None,
    feed: str | None = None,
    reason: str | None = None,
    file_id: str | None = None,
    flow_run_id: str | None = None,
    why: str | None = None,
) -> ReleaseReport:
    """Re-validate chosen rows with the feed's schema and current mapping; load the valid ones.

    Valid rows go to every target of the feed under a new load id, with their
    original file id and row number as lineage, recorded in a new ledger run
    (is_rerun); they become released. Invalid ones stay quarantined with their new
    reasons. Released rows are never selected again, so releasing twice loads once.
    """
    if not ids and feed is None and file_id is None:
        raise StewardError("release needs row ids, a feed or a file")
    report = ReleaseReport()
    if ids:
        with service.store.session() as s:
            found = rows_by_id(s, ids)
        candidates = service.checked_rows(found, list(dict.fromkeys(ids)), "release")
        selected = []
        for row in candidates:
            if row.status != QuarantineStatus.QUARANTINED:
                report.skipped[row.id] = f"{row.status} already"
            elif (feed and row.feed != feed) or (file_id and row.file_id != file_id):
                report.skipped[row.id] = "outside the feed or file asked for"
            elif reason and not reason_matches(row.reasons, reason):
                report.skipped[row.id] = f"no reason matching {reason}"
            else:
                selected.append(row)
    else:
        tenants: list[str] = []
        if file_id is not None:
            tenants.append(service.file_for(file_id, "release").tenant)
        if feed is not None:
            tenant = load_feed(feed, service.config_dir).config.tenant
            service.require(tenant, "release", "feed", [feed])
            tenants.append(tenant)
        where = QuarantineFilter(
            tenants=sorted(set(tenants)), feed=feed, file_id=file_id, reason=reason
        )
        with service.store.session() as s:
            selected = find_rows(s, where)
    with service.store.session() as s:
        files = {
            f.id: f
            for f in s.scalars(
                select(LedgerFile).where(LedgerFile.id.in_({r.file_id for r in selected}))
            )
        }
    by_feed: dict[tuple[str, str], dict[str, list[QuarantinedRow]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in selected:
        # A file still in a run (or failed) is the nightly run's to finish first:
        # releasing into it would break its first-run counts.
        if files[row.file_id].state != FileState.RECONCILED:
            report.skipped[row.id] = "its file is not reconciled yet"
            continue
        by_feed[(row.feed, row.tenant)][row.file_id].append(row)
    for (feed_name, tenant), rows_by_file in sorted(by_feed.items()):
        ctx = service.feed_for(feed_name, tenant)
        report.runs.append(
            release_feed_rows(
                service.store,
                ctx,
                actor=service.actor,
                files=[(files[f], rows) for f, rows in sorted(rows_by_file.items())],
                flow_run_id=flow_run_id,
                why=why.strip() if why and why.strip() else None,
            )
        )
    return report
