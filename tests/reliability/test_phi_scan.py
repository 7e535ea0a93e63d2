"""PHI leak scan: canary patients through runs, failures, alerts, stewarding and the workbench."""

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
from playwright.sync_api import expect
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
from tests.plugins.browser import Tab
from tests.plugins.workbench import ADMIN as WORKBENCH_ADMIN
from tests.plugins.workbench import CANARIES as WORKBENCH_CANARIES
from tests.plugins.workbench import STEWARD as WORKBENCH_STEWARD
from tests.plugins.workbench import (
    Workbench,
    release_row,
    reveal,
    save_fix,
    sign_in,
    signed_in,
    surname_row,
    type_fix,
)
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


def test_no_canary_in_the_workbench(
    workbench: Workbench, tab: Tab, reliability_figures: Figures
) -> None:
    """The steward loop in the browser; its log, masked pages, titles, URLs and audit: clean."""
    canaries = [*CANARIES, *WORKBENCH_CANARIES]
    row = surname_row(workbench)
    masked: dict[str, str] = {}
    page = tab.page

    def keep(name: str) -> None:
        masked[f"{name} ({page.url})"] = page.content()

    sign_in(tab, workbench, WORKBENCH_STEWARD)
    keep("queue")
    page.locator(f"table.queue a[href='/rows/{row['id']}']").click()
    page.wait_for_load_state()
    keep("row, masked")
    reveal(tab, "ticket 81: check the row")  # the clear page: only its title and URL count
    type_fix(tab, "patient_last_name", CANARIES[2])  # typed PHI: never echoed or logged
    expect(page.locator("#preview")).to_contain_text("Would pass now")
    keep("row, preview answered")
    save_fix(tab, "ticket 81")
    keep("row, fixed")
    release_row(tab, "ticket 81")
    keep("release result")
    for path in (f"/files/{workbench.acme_file_id}", "/runs", "/queue?status=all"):
        page.goto(f"{workbench.url}{path}")
        keep(path)
    # A record-id search for a patient's name: the answer does not repeat it.
    page.goto(f"{workbench.url}/queue")
    page.get_by_role("searchbox", name="Record id").fill(CANARIES[0])
    page.get_by_role("button", name="Find record").click()
    page.wait_for_load_state()
    keep("record search")
    # A URL someone pasted a name into (not the browser's doing: tab.urls stays clean):
    # the access log keeps the route, never the query string.
    with signed_in(workbench, WORKBENCH_STEWARD) as client:
        assert client.get(f"/rows/{row['id']}", params={"done": CANARIES[1]}).status_code == 400
    admin = tab.another()
    try:
        sign_in(admin, workbench, WORKBENCH_ADMIN)
        admin.page.goto(f"{workbench.url}/audit")
        masked[f"audit ({admin.page.url})"] = admin.page.content()
        titles, urls = [*tab.titles, *admin.titles], [*tab.urls, *admin.urls]
    finally:
        admin.context.close()
    assert len(titles) >= 10 and len(masked) >= 8

    places = {
        "server log": workbench.log_text(),
        "page titles": "\n".join(titles),
        "urls visited": "\n".join(urls),
        "audit table": repr(workbench.sql("SELECT * FROM audit_events ORDER BY id")),
        **{f"html of {name}": html for name, html in masked.items()},
        **{f"ledger table {t}": text for t, text in _ledger_tables(workbench.ledger_url).items()},
    }
    hits = [f"{c} in {where}" for c in canaries for where, text in places.items() if c in text]
    reliability_figures.add("canary_hits", len(hits))
    reliability_figures.add("canary_places_scanned", len(places))
    assert not hits, "\n".join(hits)


def test_a_name_typed_into_a_queue_filter_is_not_audited(workbench: Workbench, tab: Tab) -> None:
    """A clerk searching by surname in the Reason box: refused or kept out of the audit log."""
    sign_in(tab, workbench, WORKBENCH_STEWARD)
    tab.page.get_by_label("Reason").fill(CANARIES[1])
    tab.page.get_by_role("button", name="Apply filters").click()
    tab.page.wait_for_load_state()
    with signed_in(workbench, WORKBENCH_STEWARD) as client:
        client.get("/queue", params={"tenant": CANARIES[2]})
    audit = repr(workbench.sql("SELECT * FROM audit_events ORDER BY id"))
    assert not any(c in audit for c in CANARIES)
