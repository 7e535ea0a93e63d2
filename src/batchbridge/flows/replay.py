"""The replay-quarantine flow: a steward's release, run from the Prefect UI or API.

Prefect OSS does not authenticate UI users: whoever can reach the UI can start a
run with any parameters. `requested_by` is therefore the accountable identity: it
must be a person in the steward directory with the steward role for the feed's
tenant; every release event in the audit log names them, and a refusal is audited.
Put the Prefect UI behind an authenticating proxy so only stewards reach it.
Parameters are names and ids only, never patient data.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from batchbridge.config.settings import load_settings
from batchbridge.config.stewards import open_directory
from batchbridge.errors import StewardError
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.release import release_rows
from batchbridge.steward.service import StewardService
from batchbridge.tasks.report import publish_release_artifact


@flow(
    name="replay-quarantine",
    # Feed and kind only: who asked is in the parameters and the audit log.
    flow_run_name="{feed} quarantine-release",
    log_prints=False,
    persist_result=False,
)
def replay_quarantine(
    feed: str,
    requested_by: str,
    reason: str | None = None,
    file_id: str | None = None,
    ids: list[int] | None = None,
    config_dir: str | None = None,
) -> dict[str, Any]:
    """Re-validate a feed's quarantined rows (all, by reason, file or ids) and load those that pass.

    Fails when rows were selected but errors stopped every one of them from being
    settled; releasing twice loads once.
    """
    log = get_run_logger()
    settings = load_settings(config_dir)
    service = StewardService(
        LedgerStore.open_existing(settings.database_url),
        config_dir=settings.config_dir,
        directory=open_directory(settings.config_dir),
        actor=requested_by,
    )
    try:
        report = release_rows(
            service, ids=ids, feed=feed, reason=reason, file_id=file_id, flow_run_id=flow_run.id
        )
    finally:
        service.store.engine.dispose()
    publish_release_artifact(report, feed)
    totals = report.totals()
    log.info(
        "%s: selected %s, released %s, still quarantined %s, skipped %s, errors %s",
        feed,
        totals["selected"],
        totals["released"],
        totals["still_quarantined"],
        totals["skipped"],
        totals["errors"],
    )
    settled = report.released + report.still_quarantined
    if report.errors and settled == 0:
        raise StewardError(
            f"replay of {feed} did nothing: {len(report.errors)} error(s): "
            + "; ".join(report.errors)
        )
    return {"run_ids": [run.run_id for run in report.runs], **totals}
