"""The nightly feed flow: discover → fetch → decrypt → validate → quarantine → load → reconcile.

This module holds the @flow and the run around the files (lock, discovery, report);
one file's stages are in nightly_file, what a run shares across files in feed_run.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from batchbridge import progress
from batchbridge.config import LoadedFeed, load_feed
from batchbridge.config.settings import Settings, load_settings
from batchbridge.connectors.pgp.registry import build_decryptor
from batchbridge.connectors.sources.registry import open_source
from batchbridge.connectors.sources.selection import select_files
from batchbridge.connectors.targets.registry import open_target
from batchbridge.crashpoints import crash_point
from batchbridge.errors import BatchbridgeError, RunFailedError
from batchbridge.flows.feed_run import FeedRun, archive_leftover
from batchbridge.flows.file_workers import FileToDo, process_files
from batchbridge.flows.tenant_slot import tenant_slot
from batchbridge.ledger.locks import feed_lock
from batchbridge.ledger.models import RunStatus
from batchbridge.ledger.run_report import RunReport
from batchbridge.ledger.store import LedgerStore
from batchbridge.tasks.alerts import alert_on_run
from batchbridge.tasks.discover import list_ready_files
from batchbridge.tasks.report import publish_report_artifact
from batchbridge.validations.contract import MARKER_MAX_BYTES, marker_name
from batchbridge.validations.mapping import load_feed_mappings
from batchbridge.validations.registry import get_schema


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
            todo: list[FileToDo] = []
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
                todo.append((remote, manifest))
            workers = config.parallel_files
            report.files.extend(process_files(run, todo, force=force, workers=workers))
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
