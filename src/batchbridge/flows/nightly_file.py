"""One file of a nightly run through every stage, each recorded in the ledger as it passes.

contract → fetch → decrypt → validate → quarantine → transform → load → reconcile →
archive; a failure is recorded against the file (stage, reason), never raised.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from batchbridge import progress
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.sources.base import RemoteFile
from batchbridge.connectors.targets.early_stage import EarlyStage
from batchbridge.connectors.targets.loading import (
    TargetLoad,
    load_into_targets,
    open_early_stages,
)
from batchbridge.connectors.targets.postgres_early import MergeScope
from batchbridge.crashpoints import crash_point
from batchbridge.errors import BatchbridgeError, FileRejectedError
from batchbridge.flows.feed_run import FeedRun, archive_remote, feed_staging_dir, snapshot_scope
from batchbridge.ledger.crypto import RowCipher
from batchbridge.ledger.models import FileState
from batchbridge.ledger.run_report import FileReport
from batchbridge.tasks.fetch import fetch_file
from batchbridge.tasks.load import load_target
from batchbridge.tasks.quarantine import encrypt_quarantined_rows
from batchbridge.tasks.reconcile import reconcile_file
from batchbridge.tasks.stream import stream_rows
from batchbridge.validations.base import TransformContext, ValidationContext
from batchbridge.validations.contract import check_declared_count, check_listing, check_manifest
from batchbridge.validations.parse import file_date_from_name
from batchbridge.validations.quarantine import count_reasons
from batchbridge.validations.transformed_rows import TransformedRows


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
    rows: TransformedRows | None = None
    early: dict[str, EarlyStage] = {}
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
        zone = ZoneInfo(config.timezone)
        file_date = file_date_from_name(remote.name, datetime.now(zone).date())
        vctx = ValidationContext(
            tenant=run.tenant, file_date=file_date, timezone=config.timezone, mappings=run.mappings
        )
        tctx = TransformContext(
            tenant=run.tenant,
            timezone=config.timezone,
            mappings=run.mappings,
            pseudonym_key=resolve_secret(config.pseudonym_key, base_dir=run.loaded.base_dir)
            .get_secret_value()
            .encode(),
        )
        # Decrypt, parse, validate and transform run interleaved, chunk by chunk; their
        # seconds are summed per part. Nothing is recorded until the signature is good.
        # The PostgreSQL targets COPY the chunks into their stage as they come and, unless
        # the feed is a full snapshot (its load marks absent records at the end), upsert
        # them there and then, in the transaction the load commits. When they are all
        # the targets, the rows are not spilled: only a failed stage needs them again,
        # and then they are made again from the file.
        scope = None if config.full_snapshot else MergeScope(run.tenant, claim.file_id)
        early = open_early_stages(
            run.target_columns, natural_key=run.schema.natural_key, scope=scope
        )
        replay = len(early) == len(run.target_columns)
        try:
            with progress.stage(remote.name, "stream"):
                streamed = stream_rows(
                    run.decryptor, fetched, config.format, run.schema, vctx, tctx,
                    run.settings.chunk_bytes, staging / f"{claim.file_id}.rows",
                    list(early.values()), replay,
                )  # fmt: skip
            rows = streamed.transformed
        except FileRejectedError:
            stage = "validate"
            raise
        timings["decrypt"] = round(streamed.seconds.decrypt, 3)
        crash_point("after_decrypt")
        run.store.advance_file(
            claim.file_id, FileState.VERIFIED, signer_fingerprint=streamed.signer_fingerprint
        )
        crash_point("after_verify_ledger")
        stage = "validate"
        timings["parse"] = round(streamed.seconds.parse, 3)
        timings["validate"] = round(streamed.seconds.validate, 3)
        crash_point("after_validate")
        check_declared_count(config.contract, streamed.rows_declared)
        quarantined = streamed.quarantined
        rows_read, rows_declared = streamed.rows_read, streamed.rows_declared
        rows_valid, rows_quarantined = streamed.rows_valid, quarantined.height
        report.rows_read = rows_read
        report.rows_declared = rows_declared
        report.rows_valid = rows_valid
        report.rows_quarantined = rows_quarantined
        report.quarantine_reasons = count_reasons(quarantined)

        stage = "quarantine"
        with _timed(timings, "quarantine", file=remote.name, total=rows_quarantined):
            cipher = RowCipher(resolve_secret(config.quarantine_key, base_dir=run.loaded.base_dir))
            entries = encrypt_quarantined_rows(
                quarantined,
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
        timings["transform"] = round(streamed.seconds.transform, 3)
        crash_point("after_transform")
        full_snapshot, kept_keys = snapshot_scope(run, remote.name, quarantined)
        del streamed, entries

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
                staged=early,
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
        if rows is not None:
            rows.close()  # the encrypted spill of the transformed rows
        for early_stage in early.values():
            early_stage.close()  # a stage the load did not take is rolled back
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
