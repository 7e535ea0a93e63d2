"""What one run of a feed shares across its files, and the housekeeping around a file.

The nightly flow's helpers: the run's open source, decryptor and targets; the tenant's
staging folder; moving a done file to the processed folder; how far a full-snapshot
file may mark records inactive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from batchbridge.config import LoadedFeed
from batchbridge.config.settings import Settings
from batchbridge.connectors.pgp.base import Decryptor
from batchbridge.connectors.sources.base import FetchedFile, RemoteFile, Source
from batchbridge.connectors.sources.staging import prepare_staging_dir
from batchbridge.connectors.targets.base import Target
from batchbridge.errors import BatchbridgeError
from batchbridge.ledger.run_report import FileReport, RunReport
from batchbridge.ledger.store import LedgerStore
from batchbridge.tasks.fetch import fetch_file
from batchbridge.validations.base import FeedSchema
from batchbridge.validations.parse import file_date_from_name

logger = logging.getLogger(__name__)


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
