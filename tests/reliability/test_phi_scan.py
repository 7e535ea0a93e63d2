"""PHI leak scan: canary patients through runs, failures, alerts and stewarding; zero hits."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path

import prefect.settings
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort, LogSort, TaskRunSort
from pydantic import BaseModel
from sqlalchemy import MetaData, select

from batchbridge.config.settings import load_settings
from batchbridge.demo.lab_data import generate_lab_rows, render_lab_csv
from batchbridge.demo.scenario import LabFeedScenario, lab_file_name
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.release import release_rows
from batchbridge.steward.service import StewardService
from tests.integration.flow_helpers import run_flow, target_rows
from tests.reliability.conftest import Figures
from tests.support.webhook import WebhookReceiver

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

CANARIES = ["Zebulonquix", "Orvillecanary", "Quintessa-Marrowby"]
FILE_DATE = date(2026, 11, 20)
STEWARD = "dana.steward@acme-health.example"
PAGE = 200
# Encrypted on purpose: the only columns allowed to hold patient data (as ciphertext).
ENCRYPTED_COLUMNS = {("quarantined_rows", "ciphertext"), ("quarantine_edits", "ciphertext")}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as started:
        yield started


def _prefect_records() -> str:
    parts: list[str] = []
    with get_client(sync_client=True) as client:
        readers: list[Callable[[int], Sequence[BaseModel]]] = [
            lambda o: client.read_flow_runs(sort=FlowRunSort.START_TIME_ASC, limit=PAGE, offset=o),
            lambda o: client.read_task_runs(
                sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=PAGE, offset=o
            ),
            lambda o: client.read_logs(sort=LogSort.TIMESTAMP_ASC, limit=PAGE, offset=o),
            lambda o: client.read_artifacts(sort=ArtifactSort.CREATED_DESC, limit=PAGE, offset=o),
        ]
        for read in readers:
            offset = 0
            while page := read(offset):
                parts += [record.model_dump_json() for record in page]
                offset += PAGE
    return "\n".join(parts)


def _prefect_database_bytes() -> bytes:
    url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    path = Path(str(url).split("///", 1)[1])
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def _ledger_tables(url: str) -> dict[str, str]:
    """Every ledger table as text, minus the encrypted payload columns."""
    store = LedgerStore.from_url(url)
    metadata = MetaData()
    metadata.reflect(store.engine)
    dumped: dict[str, str] = {}
    with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if (table.name, c.name) not in ENCRYPTED_COLUMNS]
            rows = conn.execute(select(*columns)).all()
            dumped[table.name] = repr([tuple(row) for row in rows])
    store.engine.dispose()
    return dumped


def test_no_canary_anywhere_but_ciphertext(
    scenario: LabFeedScenario,
    receiver: WebhookReceiver,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    reliability_figures: Figures,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("BB_TEST_WEBHOOK", receiver.url)
    feed = yaml.safe_load(scenario.feed_path.read_text(encoding="utf-8"))
    feed["alerts"] = {"webhook": "env:BB_TEST_WEBHOOK", "quarantine_rate_threshold": 0.01}
    scenario.feed_path.write_text(yaml.safe_dump(feed, sort_keys=False), encoding="utf-8")
    stewards = tmp_path / "stewards.yaml"
    stewards.write_text(f"stewards:\n  {STEWARD}:\n    acme_lab: steward\n", encoding="utf-8")
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(stewards))
    monkeypatch.setenv("BATCHBRIDGE_ACTOR", STEWARD)

    rows = generate_lab_rows(
        60,
        seed=9,
        file_date=FILE_DATE,
        bad_rows={"missing_last_name": 2, "bad_npi": 2, "unmapped_code": 2},
        canary_names=CANARIES,
    )
    data = render_lab_csv(rows)
    lines = data.splitlines(keepends=True)
    scenario.drop_file(lab_file_name(FILE_DATE, seq=1), rows)  # good, with quarantine
    scenario.drop_file(lab_file_name(FILE_DATE, seq=2), rows, signer_fpr=None)  # unsigned
    ragged = lines[0] + f"R1,{CANARIES[0]},{CANARIES[1]}\n".encode() + b"".join(lines[1:])
    scenario.drop_file(lab_file_name(FILE_DATE, seq=3), ragged)  # broken row
    drift = lines[0].replace(b"patient_zip", CANARIES[2].encode()) + b"".join(lines[1:])
    scenario.drop_file(lab_file_name(FILE_DATE, seq=4), drift)  # header drift
    scenario.drop_file(lab_file_name(FILE_DATE, seq=5), b"".join(lines[:-2] + lines[-1:]))

    report = run_flow(scenario)
    assert {f.outcome for f in report.files} == {"reconciled", "failed"}

    steward = StewardService.from_settings(load_settings(scenario.config_dir))
    listed = steward.list_rows()
    assert listed
    steward.reveal(listed[0].id, why="ticket 81: check the row")
    steward.fix(listed[0].id, {"patient_last_name": CANARIES[1]}, why="ticket 81")
    release_rows(steward, ids=[listed[0].id])
    steward.store.engine.dispose()
    time.sleep(2)  # Prefect ships logs in batches

    printed = capsys.readouterr()
    texts = {
        "stdout": printed.out,
        "stderr": printed.err,
        "logs": caplog.text,
        "prefect api": _prefect_records(),
        "alerts": json.dumps(receiver.bodies),
        "warehouse": repr(target_rows(postgres_url)),
        **{f"ledger table {t}": text for t, text in _ledger_tables(postgres_url).items()},
    }
    blobs = {"prefect database": _prefect_database_bytes()}
    assert receiver.bodies, "the failures should have raised alerts"
    hits: list[str] = []
    for canary in CANARIES:
        hits += [f"{canary} in {where}" for where, t in texts.items() if canary in t]
        hits += [f"{canary} in {where}" for where, b in blobs.items() if canary.encode() in b]
    reliability_figures.add("canary_hits", len(hits))
    reliability_figures.add("canary_places_scanned", len(texts) + len(blobs))
    assert hits == []
