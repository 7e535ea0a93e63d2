"""A CLI-started run in Prefect: named by feed and start, tagged as deployed runs, linked."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from batchbridge.cli.run import run_feed_once
from batchbridge.config.settings import load_settings
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.demo.scenario import LabFeedScenario, lab_file_name
from batchbridge.ledger.store import LedgerStore

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

FILE_DATE = date(2026, 11, 20)
CANARIES = ["Zebulonquix", "Orvillecanary"]


def test_cli_run_is_named_tagged_and_linked_to_the_ledger(scenario: LabFeedScenario) -> None:
    rows = generate_lab_rows(20, seed=5, file_date=FILE_DATE, canary_names=CANARIES)
    scenario.drop_file(lab_file_name(FILE_DATE), rows)
    settings = load_settings(scenario.config_dir)

    report, status = run_feed_once(scenario.feed, settings, files=None, force=False)

    assert status == "succeeded" and report.flow_run_id is not None
    store = LedgerStore.from_url(settings.database_url)
    try:
        run = store.get_run(report.run_id)
    finally:
        store.engine.dispose()
    assert run is not None and run.flow_run_id == report.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(report.flow_run_id)  # type: ignore[arg-type]
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    # A manual run is named by its start, in the feed schedule's zone (the name is given
    # just before Prefect records the start: the minute may have turned in between).
    assert flow_run.start_time is not None
    started = flow_run.start_time.astimezone(ZoneInfo("America/Chicago"))
    assert flow_run.name in {
        f"{scenario.feed} {moment:%Y-%m-%d %H:%M}"
        for moment in (started, started - timedelta(minutes=1))
    }
    assert {f"tenant:{scenario.tenant}", f"feed:{scenario.feed}"} <= set(flow_run.tags)

    markdown = [str(a.data) for a in artifacts if a.type == "markdown"]
    assert markdown and f"Ledger run `{report.run_id}`" in markdown[0]
    assert f"`batchbridge runs show {report.run_id[:8]}`" in markdown[0]
    tables = [a for a in artifacts if a.type == "table"]
    assert tables and report.run_id in (tables[0].description or "")
    seen = " ".join([flow_run.model_dump_json(), *(a.model_dump_json() for a in artifacts)])
    assert not any(c in seen for c in CANARIES)
