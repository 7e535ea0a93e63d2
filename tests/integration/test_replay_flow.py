"""The replay-quarantine flow through Prefect: releases once, names its requester, leaks nothing."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from sqlalchemy import select

from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.flows.replay import replay_quarantine
from batchbridge.ledger.models import AuditEvent, Run
from batchbridge.ledger.store import LedgerStore
from tests.support.steward import LocalLabFeed, build_local_lab_feed

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

FILE_DATE = date(2026, 11, 20)
CANARIES = ["Zebulonquix", "Orvillecanary"]
DANA = "dana.steward@acme-health.example"


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalLabFeed:
    built = build_local_lab_feed(tmp_path)
    stewards = tmp_path / "stewards.yaml"
    stewards.write_text(f"stewards:\n  {DANA}:\n    acme_lab: steward\n", encoding="utf-8")
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(stewards))
    monkeypatch.setenv("BATCHBRIDGE_DATABASE_URL", built.settings.database_url)
    rows = generate_lab_rows(
        40, seed=5, file_date=FILE_DATE, bad_rows={"unmapped_code": 4}, canary_names=CANARIES
    )
    built.ingest(rows, file_date=FILE_DATE)
    return built


def test_replay_releases_once_and_records_who_asked(lab: LocalLabFeed) -> None:
    lab.add_mapping("ZZ-NOT-IN-MAP", "2345-7", "Glucose", False)
    config_dir = str(lab.config_dir)
    state = replay_quarantine(
        feed="lab_results",
        requested_by=DANA,
        reason="unmapped_code",
        config_dir=config_dir,
        return_state=True,
    )
    assert state.is_completed(), state.message
    first = state.result()
    assert first["released"] == 4 and first["errors"] == 0
    again = replay_quarantine(
        feed="lab_results", requested_by=DANA, reason="unmapped_code", config_dir=config_dir
    )
    assert again["released"] == 0 and again["selected"] == 0

    store = LedgerStore.from_url(lab.settings.database_url)
    with store.session() as s:
        run = s.get_one(Run, first["run_ids"][0])
        released = s.scalars(select(AuditEvent).where(AuditEvent.action == "release")).all()
    store.engine.dispose()
    assert run.is_rerun and run.flow_run_id == str(state.state_details.flow_run_id)
    assert [e.actor for e in released] == [DANA]

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
    texts = [
        str(a.data)
        for a in artifacts
        if a.key == "lab-results-quarantine-replay"
        and a.flow_run_id == state.state_details.flow_run_id
    ]
    assert texts and "released 4" in texts[-1]
    seen = " ".join([*texts, flow_run.model_dump_json()])
    assert not any(c in seen for c in CANARIES)


def test_replay_refuses_a_shared_or_unknown_requester(lab: LocalLabFeed) -> None:
    for requester in ("root", "mallory@example.org"):
        state = replay_quarantine(
            feed="lab_results",
            requested_by=requester,
            config_dir=str(lab.config_dir),
            return_state=True,
        )
        assert state.is_failed()
