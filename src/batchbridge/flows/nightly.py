"""The nightly feed flow: discover → fetch → decrypt → validate → quarantine → load → reconcile."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from batchbridge import progress
from batchbridge.config import LoadedFeed, load_feed
from batchbridge.config.settings import Settings, load_settings
from batchbridge.connectors.pgp.base import Decryptor
from batchbridge.connectors.pgp.registry import build_decryptor
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.sources.base import FetchedFile, RemoteFile, Source
from batchbridge.connectors.sources.registry import open_source
from batchbridge.connectors.sources.selection import select_files
from batchbridge.connectors.sources.staging import prepare_staging_dir
from batchbridge.connectors.targets.base import Target
from batchbridge.connectors.targets.loading import TargetLoad, load_into_targets
from batchbridge.connectors.targets.registry import open_target
from batchbridge.crashpoints import crash_point
from batchbridge.errors import BatchbridgeError, RunFailedError
from batchbridge.flows.tenant_slot import tenant_slot
from batchbridge.ledger.crypto import RowCipher
from batchbridge.ledger.locks import feed_lock
from batchbridge.ledger.models import FileState, RunStatus
from batchbridge.ledger.run_report import FileReport, RunReport
from batchbridge.ledger.store import LedgerStore
from batchbridge.tasks.alerts import alert_on_run
from batchbridge.tasks.decrypt import decrypt_file
from batchbridge.tasks.discover import list_ready_files
from batchbridge.tasks.fetch import fetch_file
from batchbridge.tasks.load import load_target
from batchbridge.tasks.quarantine import encrypt_quarantined_rows
from batchbridge.tasks.reconcile import reconcile_file
from batchbridge.tasks.report import publish_report_artifact
from batchbridge.tasks.transform import transform_rows
from batchbridge.tasks.validate import validate_file
from batchbridge.validations.base import FeedSchema, TransformContext, ValidationContext
from batchbridge.validations.contract import (
    MARKER_MAX_BYTES,
    check_declared_count,
    check_listing,
    check_manifest,
    marker_name,
)
from batchbridge.validations.mapping import load_feed_mappings
from batchbridge.validations.parse import file_date_from_name
from batchbridge.validations.quarantine import count_reasons
from batchbridge.validations.registry import get_schema

logger = logging.getLogger(__name__)


@contextmanager
def _timed(
    timings: dict[str, float],
    stage: str,
    *,
    file: str,
    total: int | None = None,
    unit: str = "rows",
) -> Iterator[None]:
    """Time a stage of a file into `timings`, and show it on a watching terminal."""
    started = time.perf_counter()
    try:
        with progress.stage(file, stage, total=total, unit=unit):
            yield
    finally:
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - started, 3)


@dataclass
class FeedRun:
    """Everything one run of one feed shares across its files."""

    loaded: LoadedFeed
    settings: Settings
    store: LedgerStore
    run_id: str
    schema: FeedSchema
    mappings: dict[str, pl.DataFrame]
    report: RunReport
    source: Source | None = None
    decryptor: Decryptor | None = None
    targets: list[Target] = field(default_factory=list)

    @property
    def tenant(self) -> str:
        return self.loaded.config.tenant

    @property
    def feed(self) -> str:
        return self.loaded.config.feed

    @property
    def target_columns(self) -> list[tuple[Target, list[str]]]:
        """Each open target with the columns its config lets it receive."""
        return [
            (target, list(config.columns))
            for target, config in zip(self.targets, self.loaded.config.targets, strict=True)
        ]


def feed_staging_dir(staging_dir: Path, tenant: str, feed: str) -> Path:
    """`staging_dir/<tenant>/<feed>`, every level 0700.

    Runs of different feeds share a worker and may fetch files of the same name at the
    same moment; one tenant's ciphertext never sits in another tenant's folder.
    """
    folder = prepare_staging_dir(staging_dir)
    for part in (tenant, feed):
        folder = prepare_staging_dir(folder / part)
    return folder


def archive_remote(source: Source, remote: RemoteFile, report: FileReport) -> None:
    """Move the remote file to the processed folder; a failure here leaves the file done.

    The rows are loaded and reconciled: failing the file now would only make the next
    run redo (idempotently) work that is complete. The problem is reported instead.
    """
    try:
        source.mark_processed(remote)
    except BatchbridgeError as exc:
        report.reason = exc.reason
        report.message = f"loaded and reconciled, but not moved to the processed folder: {exc}"
        logger.warning("%s: %s", remote.name, report.message)


def archive_leftover(run: FeedRun, remote: RemoteFile) -> None:
    """Archive a file an earlier run reconciled but never moved (it stopped in between).

    Without this a run killed after reconciling a file, or whose move failed, leaves the
    file in the inbox for good: every later run skips it as already done. Its bytes are
    fetched and compared with the reconciled ones first, so a new upload that merely
    shares the name and size is never filed away unprocessed.
    """
    assert run.source is not None
    fetched: FetchedFile | None = None
    try:
        staging = feed_staging_dir(run.settings.staging_dir, run.tenant, run.feed)
        fetched = fetch_file(run.source, remote, staging)
        if not run.store.is_done(
            tenant=run.tenant,
            feed=run.feed,
            name=remote.name,
            size=remote.size,
            sha256=fetched.sha256,
        ):
            run.report.notes.append(
                f"{remote.name}: same name and size as a reconciled file but other bytes: "
                "left in the inbox, not processed (rerun it with force to load it)"
            )
            return
        run.source.mark_processed(remote)
        run.report.notes.append(
            f"{remote.name}: reconciled by an earlier run that did not archive it: "
            "moved to the processed folder now"
        )
    except BatchbridgeError as exc:
        run.report.notes.append(
            f"{remote.name}: reconciled, but still not moved to the processed folder: {exc}"
        )
    finally:
        if fetched is not None:
            fetched.local_path.unlink(missing_ok=True)


def snapshot_scope(
    run: FeedRun, name: str, quarantined: pl.DataFrame
) -> tuple[bool, pl.DataFrame | None]:
    """Whether this file may mark absent records inactive, and the keys it must keep.

    A full-snapshot file's quarantined rows are still current records: their keys are
    kept active. When a quarantined row has no usable key, who it stands for is unknown,
    so nobody is marked inactive by this file (a later complete file will do it).
    """
    if not run.loaded.config.full_snapshot:
        return False, None
    # An older full file loaded after a newer one (a forced rerun, a late upload) must
    # not undo the newer one's view of who is current.
    fallback = datetime.now(UTC).date()
    this_date = file_date_from_name(name, fallback)
    newer = [
        other
        for other in run.store.reconciled_file_names(tenant=run.tenant, feed=run.feed)
        if other != name and file_date_from_name(other, fallback) > this_date
    ]
    if newer:
        run.report.notes.append(
            f"{name}: a newer full file ({sorted(newer)[-1]}) is already loaded: "
            "rows upserted, nobody marked inactive from this older file"
        )
        return False, None
    keys = list(run.schema.natural_key)
    kept = quarantined.select(keys)
    unusable = kept.select(
        pl.any_horizontal([pl.col(k).is_null() | (pl.col(k).str.strip_chars() == "") for k in keys])
    ).to_series()
    if unusable.any():
        run.report.notes.append(
            f"{name}: {int(unusable.sum())} quarantined rows have no usable "
            f"{'/'.join(keys)}: nobody was marked inactive from this file"
        )
        return False, None
    return True, kept


def process_file(
    run: FeedRun, remote: RemoteFile, *, force: bool, manifest: bytes | None = None
) -> FileReport | None:
    """Take one file through every stage; a failure is recorded, never raised."""
    assert run.source is not None and run.decryptor is not None
    claim = run.store.claim_file(
        run_id=run.run_id,
        tenant=run.tenant,
        feed=run.feed,
        name=remote.name,
        size=remote.size,
        force=force,
    )
    if claim is None:
        run.report.skipped[remote.name] = "already_done"
        return None
    crash_point("after_claim")
    config = run.loaded.config
    report = FileReport(
        name=remote.name, file_id=claim.file_id, outcome="failed", is_rerun=claim.is_rerun
    )
    timings: dict[str, float] = {}
    stage = "contract"
    fetched_path: Path | None = None
    try:
        check_listing(config.contract, remote, timezone=config.timezone)
        stage = "fetch"
        with _timed(timings, "fetch", file=remote.name, total=remote.size, unit="bytes"):
            staging = feed_staging_dir(run.settings.staging_dir, run.tenant, run.feed)
            fetched = fetch_file(run.source, remote, staging)
        fetched_path = fetched.local_path
        if manifest is not None:
            stage = "contract"
            check_manifest(manifest, name=remote.name, sha256=fetched.sha256)
            stage = "fetch"
        crash_point("after_download")
        run.store.advance_file(claim.file_id, FileState.FETCHED, sha256=fetched.sha256)
        crash_point("after_fetch_ledger")

        stage = "decrypt"
        with _timed(timings, "decrypt", file=remote.name, unit="bytes"):
            plaintext = decrypt_file(run.decryptor, fetched)
        crash_point("after_decrypt")
        run.store.advance_file(
            claim.file_id, FileState.VERIFIED, signer_fingerprint=plaintext.signer_fingerprint
        )
        crash_point("after_verify_ledger")

        stage = "validate"
        zone = ZoneInfo(config.timezone)
        file_date = file_date_from_name(remote.name, datetime.now(zone).date())
        vctx = ValidationContext(
            tenant=run.tenant, file_date=file_date, timezone=config.timezone, mappings=run.mappings
        )
        with _timed(timings, "validate", file=remote.name):
            validated = validate_file(plaintext.data, config.format, run.schema, vctx)
            progress.finished_with(validated.rows_read)
        crash_point("after_validate")
        del plaintext  # the bytes are patient data: drop them as soon as they are parsed
        check_declared_count(config.contract, validated.rows_declared)
        result = validated.result
        rows_read, rows_declared = validated.rows_read, validated.rows_declared
        rows_valid, rows_quarantined = result.valid.height, result.quarantined.height
        report.rows_read = rows_read
        report.rows_declared = rows_declared
        report.rows_valid = rows_valid
        report.rows_quarantined = rows_quarantined
        report.quarantine_reasons = count_reasons(result.quarantined)

        stage = "quarantine"
        with _timed(timings, "quarantine", file=remote.name, total=rows_quarantined):
            cipher = RowCipher(resolve_secret(config.quarantine_key, base_dir=run.loaded.base_dir))
            entries = encrypt_quarantined_rows(
                result.quarantined,
                columns=run.schema.columns,
                cipher=cipher,
                file_id=claim.file_id,
                record_column=run.schema.natural_key[0],
            )
            run.store.save_quarantine(
                tenant=run.tenant,
                feed=run.feed,
                file_id=claim.file_id,
                run_id=run.run_id,
                entries=entries,
            )
        crash_point("after_quarantine_commit")
        run.store.advance_file(
            claim.file_id,
            FileState.VALIDATED,
            rows_read=rows_read,
            rows_declared=rows_declared,
            rows_valid=rows_valid,
            rows_quarantined=rows_quarantined,
        )
        crash_point("after_validated_ledger")

        stage = "transform"
        tctx = TransformContext(
            tenant=run.tenant,
            timezone=config.timezone,
            mappings=run.mappings,
            pseudonym_key=resolve_secret(config.pseudonym_key, base_dir=run.loaded.base_dir)
            .get_secret_value()
            .encode(),
        )
        with _timed(timings, "transform", file=remote.name, total=rows_valid):
            rows = transform_rows(result.valid, run.schema, tctx)
        crash_point("after_transform")
        full_snapshot, kept_keys = snapshot_scope(run, remote.name, result.quarantined)
        # The parsed rows (names, MRNs, ...) are not needed past the transform: release
        # them before the load, as the plaintext is released after parsing.
        del validated, result

        stage = "load"

        def loaded(done: TargetLoad) -> None:
            run.store.record_load(run_id=run.run_id, file_id=claim.file_id, load=done.record())
            report.targets[done.result.target] = done.counts()

        with _timed(timings, "load", file=remote.name, total=rows_valid):
            loads = load_into_targets(
                run.target_columns,
                tenant=run.tenant,
                natural_key=run.schema.natural_key,
                file_id=claim.file_id,
                rows=rows,
                on_loaded=loaded,
                load=load_target,
                feed=run.feed,
                source_name=remote.name,
                full_snapshot=full_snapshot,
                kept_keys=kept_keys,
            )
        crash_point("after_load_ledger")
        run.store.advance_file(claim.file_id, FileState.LOADED)
        crash_point("before_reconcile")

        stage = "reconcile"
        report.balanced = False
        reconcile_file(
            rows_read=rows_read,
            rows_declared=rows_declared,
            rows_valid=rows_valid,
            rows_quarantined=rows_quarantined,
            loads=[done.result for done in loads],
        )
        report.balanced = True
        crash_point("after_reconcile_before_ledger")
        run.store.advance_file(claim.file_id, FileState.RECONCILED)
        crash_point("after_reconcile_before_archive")

        report.outcome = "reconciled"
        stage = "archive"
        with _timed(timings, "archive", file=remote.name):
            archive_remote(run.source, remote, report)
        crash_point("after_archive")
    except BatchbridgeError as exc:
        report.failed_stage = stage
        report.reason = exc.reason
        report.message = str(exc)
        run.store.fail_file(claim.file_id, stage=stage, reason=exc.reason, message=str(exc))
    finally:
        if fetched_path is not None:
            fetched_path.unlink(missing_ok=True)
        report.stage_seconds = timings
        run.store.record_run_file(
            run_id=run.run_id,
            file_id=claim.file_id,
            outcome=report.outcome,
            is_rerun=claim.is_rerun,
            stage_seconds=timings,
        )
    crash_point("after_file")
    return report


def _process_feed(
    loaded: LoadedFeed,
    settings: Settings,
    store: LedgerStore,
    report: RunReport,
    *,
    files: list[str] | None,
    force: bool,
) -> None:
    """Discover and process the feed's files into `report`; run-level errors land in it."""
    config = loaded.config
    run_id = report.run_id
    stage = "setup"
    try:
        with ExitStack() as stack:
            schema = get_schema(config.schema_name)
            run = FeedRun(
                loaded=loaded,
                settings=settings,
                store=store,
                run_id=run_id,
                schema=schema,
                mappings=load_feed_mappings(loaded, schema),
                report=report,
            )
            run.decryptor = build_decryptor(loaded)
            for target_config in config.targets:
                target = open_target(loaded, target_config)
                stack.callback(target.close)
                run.targets.append(target)
            stage = "discover"
            with progress.stage(config.feed, "discover", unit="files"):
                source = open_source(loaded)
                stack.callback(source.close)
                run.source = source
                ready = list_ready_files(source)
                progress.finished_with(len(ready))
            crash_point("after_discover")
            done = {
                r.name: store.is_done(
                    tenant=config.tenant, feed=config.feed, name=r.name, size=r.size
                )
                for r in ready
            }
            discovery = select_files(ready, is_done=done, requested=files, force=force)
            report.skipped.update(discovery.skipped)
            stage = "files"
            for remote in discovery.to_process:
                marker_name_ = marker_name(config.contract, remote.name)
                manifest: bytes | None = None
                if marker_name_ is not None:
                    marker = source.read_marker(marker_name_, MARKER_MAX_BYTES)
                    if marker is None:
                        # Not broken, just not finished: the partner writes the marker last.
                        report.skipped[remote.name] = f"awaiting_marker ({marker_name_})"
                        continue
                    if config.contract.marker == "manifest":
                        manifest = marker
                file_report = process_file(run, remote, force=force, manifest=manifest)
                if file_report is not None:
                    report.files.append(file_report)
            if config.source.processed_dir is not None:
                stage = "archive"
                for remote in ready:
                    if discovery.skipped.get(remote.name) == "already_done":
                        archive_leftover(run, remote)
    except BatchbridgeError as exc:
        report.error = {"stage": stage, "reason": exc.reason, "message": str(exc)}


def run_feed(
    loaded: LoadedFeed,
    settings: Settings,
    *,
    files: list[str] | None = None,
    force: bool = False,
    flow_run_id: str | None = None,
    attempt: int = 1,
) -> RunReport:
    """Run one feed once and return its report (also stored in the ledger).

    `attempt` > 1 is Prefect running the same flow run again (a Retry from the UI):
    like a custom run with files or force, the run is marked a rerun.
    """
    store = LedgerStore.from_url(settings.database_url)
    config = loaded.config
    is_rerun = bool(files) or force or attempt > 1
    run_id = store.start_run(
        tenant=config.tenant, feed=config.feed, flow_run_id=flow_run_id, is_rerun=is_rerun
    )
    started = time.perf_counter()
    report = RunReport(
        run_id=run_id,
        flow_run_id=flow_run_id,
        tenant=config.tenant,
        feed=config.feed,
        is_rerun=is_rerun,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    # One run per feed at a time: a second run started meanwhile (a UI rerun during the
    # nightly run, a double trigger) does nothing rather than race for the same files.
    with feed_lock(store.engine, tenant=config.tenant, feed=config.feed) as locked:
        if not locked:
            report.notes.append(
                "another run of this feed is in progress: this run did nothing (feed_busy)"
            )
        else:
            _process_feed(loaded, settings, store, report, files=files, force=force)
    report.seconds = round(time.perf_counter() - started, 3)
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    failed = bool(report.failed_files) or report.error is not None
    report.status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
    crash_point("during_report")
    store.finish_run(run_id, status=RunStatus(report.status), report=report.to_dict())
    crash_point("after_report")
    store.engine.dispose()
    return report


def feed_zone(feed: str, config_dir: str | None) -> ZoneInfo | None:
    """The zone of the feed's schedule (else of its data); None when the feed cannot be read."""
    try:
        config = load_feed(feed, load_settings(config_dir).config_dir).config
    except BatchbridgeError:
        return None  # the run itself fails on it next, with the reason
    return ZoneInfo(config.schedule.timezone if config.schedule else config.timezone)


def nightly_run_name() -> str:
    """`lab_results 2026-12-03 02:00`: the feed and, in its zone, the night the run is for.

    Prefect calls this without arguments inside the new flow run's context, before the
    run starts. A run the scheduler made is named by its scheduled start (a late run, or
    one retried, keeps its night's name); any other run (CLI, UI quick or custom run) by
    its first actual start (now, unless it is being retried). Feed and time only.
    """
    context = FlowRunContext.get()
    parameters = (context.parameters if context is not None else None) or {}
    run = context.flow_run if context is not None else None
    feed = str(parameters.get("feed", "?"))
    moment = datetime.now(UTC)
    if run is not None and run.auto_scheduled and run.expected_start_time is not None:
        moment = run.expected_start_time
    elif run is not None and run.start_time is not None:
        moment = run.start_time
    zone = feed_zone(feed, parameters.get("config_dir"))
    if zone is None:
        return f"{feed} {moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return f"{feed} {moment.astimezone(zone):%Y-%m-%d %H:%M}"


@flow(
    name="nightly-feed",
    flow_run_name=nightly_run_name,
    log_prints=False,
    persist_result=False,
)
def nightly_feed(
    feed: str,
    config_dir: str | None = None,
    files: list[str] | None = None,
    force: bool = False,
) -> dict[str, object]:
    """Run a partner feed once; fails (after writing the report) when any file failed.

    Parameters are names only: feed, config folder, remote file names, force.
    """
    log = get_run_logger()
    settings = load_settings(config_dir)
    loaded = load_feed(feed, settings.config_dir)
    with tenant_slot(loaded.config.tenant):
        report = run_feed(
            loaded,
            settings,
            files=files,
            force=force,
            flow_run_id=flow_run.id,
            attempt=flow_run.run_count,
        )
    publish_report_artifact(report)
    # After the report is stored and published; alert_on_run never raises.
    alerts = alert_on_run(report, loaded).counts()
    for file_report in report.files:
        log.info(
            "%s: %s (read %s, valid %s, quarantined %s%s)",
            file_report.name,
            file_report.outcome,
            file_report.rows_read,
            file_report.rows_valid,
            file_report.rows_quarantined,
            f", failed at {file_report.failed_stage}: {file_report.reason}"
            if file_report.outcome == "failed"
            else "",
        )
    if report.status == RunStatus.FAILED:
        failed = [f.name for f in report.failed_files]
        detail = (
            f"{len(failed)} file(s) failed: {', '.join(failed)}"
            if failed
            else f"run failed at {report.error['stage'] if report.error else '?'}"
        )
        raise RunFailedError(f"feed {feed} run {report.run_id}: {detail}")
    return {"run_id": report.run_id, "status": report.status, **report.totals(), **alerts}
