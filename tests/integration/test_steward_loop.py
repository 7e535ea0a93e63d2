"""The steward loop on PostgreSQL: quarantine → list → reveal → fix → release → balance."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select

from batchbridge.cli.app import main
from batchbridge.config.settings import load_settings
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.demo.scenario import LabFeedScenario, lab_file_name
from batchbridge.errors import AccessDeniedError, QuarantineRowNotFoundError
from batchbridge.ledger.audit import verify_chain
from batchbridge.ledger.crypto import QuarantineDecryptError
from batchbridge.ledger.models import AuditEvent, QuarantinedRow
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.release import release_rows
from batchbridge.steward.service import StewardService
from tests.integration.flow_helpers import libpq_url, run_flow, target_rows
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

CANARIES = ["Zebulonquix", "Orvillecanary"]
FILE_DATE = date(2026, 11, 20)
DANA = "dana.steward@acme-health.example"
EVE = "eve.steward@globex.example"


@pytest.fixture
def stewards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "stewards.yaml"
    path.write_text(
        f"stewards:\n  {DANA}:\n    acme_lab: admin\n  {EVE}:\n    globex_clinic: steward\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(path))
    monkeypatch.setenv("BATCHBRIDGE_ACTOR", DANA)
    return path


@pytest.fixture
def quarantined(scenario: LabFeedScenario, stewards: Path) -> Iterator[StewardService]:
    rows = generate_lab_rows(
        40,
        seed=21,
        file_date=FILE_DATE,
        bad_rows={"missing_last_name": 1, "bad_npi": 1, "unmapped_code": 3},
        canary_names=CANARIES,
    )
    scenario.drop_file(lab_file_name(FILE_DATE), rows)
    report = run_flow(scenario)
    assert report.files[0].rows_quarantined == 5
    service = StewardService.from_settings(load_settings(scenario.config_dir))
    yield service
    service.store.engine.dispose()


def _by_reason(service: StewardService, rule: str) -> list[int]:
    return [r.id for r in service.list_rows() if any(rule in reason for reason in r.reasons)]


def _audit(service: StewardService) -> list[AuditEvent]:
    with service.store.session() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_whole_steward_loop(
    quarantined: StewardService,
    scenario: LabFeedScenario,
    postgres_url: str,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    service = quarantined
    listed = service.list_rows()
    assert len(listed) == 5
    assert not any(c.lower() in repr(listed).lower() for c in CANARIES)
    file_id = listed[0].file_id
    before_release = len(target_rows(postgres_url))

    # Reveal is audited with its reason; show is masked.
    (name_row,) = _by_reason(service, "patient_last_name:required")
    masked = service.show(name_row)
    assert not any(c in repr(masked) for c in CANARIES)
    revealed = service.reveal(name_row, why="ticket 4711: confirm the surname")
    assert "ticket 4711" in _audit(service)[-1].reason  # type: ignore[operator]
    assert revealed is not None

    # Fix, then release: the row reaches the warehouse with its file lineage.
    service.fix(name_row, {"patient_last_name": "Fixedname"}, why="surname from the clinic")
    first = release_rows(service, ids=[name_row])
    assert first.released == 1
    after = target_rows(postgres_url)
    assert len(after) == before_release + 1
    new_rows = [row for row in after.values() if row["file_id"] == file_id and row["source_row"]]
    assert new_rows

    # Releasing again loads nothing more.
    again = release_rows(service, ids=[name_row])
    assert again.released == 0
    assert len(target_rows(postgres_url)) == before_release + 1

    # Fix by rule: a mapping update releases every unmapped row at once.
    mapping = scenario.root / "mappings" / "acme_lab_loinc.csv"
    with mapping.open("a", encoding="utf-8") as handle:
        handle.write("ZZ-NOT-IN-MAP,2345-7,Glucose [Mass/volume] in Serum or Plasma,false\n")
    bulk = release_rows(service, feed="lab_results", reason="unmapped_code")
    assert bulk.released == 3

    # Export, edit offline, import, release.
    (npi_row,) = _by_reason(service, "ordering_provider_npi:npi_luhn")
    export = tmp_path / "fix-me.csv"
    assert service.export_rows(export, ids=[npi_row], why="NPI correction batch") == 1
    with export.open(encoding="utf-8", newline="") as handle:
        exported = list(csv.DictReader(handle))
    exported[0]["ordering_provider_npi"] = "1234567893"
    with export.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(exported[0]))
        writer.writeheader()
        writer.writerows(exported)
    assert service.import_rows(export, why="NPI correction batch") == 1
    export.unlink()
    assert release_rows(service, ids=[npi_row]).released == 1

    # Counts balance: read = first run + after fix + still quarantined + discarded.
    balance = service.file_balance(file_id)
    assert balance.rows_read == 40
    assert balance.loaded_after_fix == 5 and balance.still_quarantined == 0
    assert balance.balanced

    # Every action is in the audit log, the chain verifies, and no canary is in it.
    events = _audit(service)
    actions = {e.action for e in events}
    assert {"reveal", "fix", "release", "export", "import"} <= actions
    assert not any(c.lower() in repr([vars(e) for e in events]).lower() for c in CANARIES)
    assert main(["audit", "verify", "--config-dir", str(scenario.config_dir)]) == 0

    # The database's bytes hold no canary in plaintext.
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    for path in postgres_server.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(c.encode() in data for c in CANARIES), f"canary in {path}"


def test_cross_tenant_access_is_refused_and_audited(
    quarantined: StewardService, monkeypatch: pytest.MonkeyPatch, scenario: LabFeedScenario
) -> None:
    row_id = quarantined.list_rows()[0].id
    monkeypatch.setenv("BATCHBRIDGE_ACTOR", EVE)
    eve = StewardService.from_settings(load_settings(scenario.config_dir))
    assert eve.list_rows() == []
    for attempt in (
        lambda: eve.reveal(row_id, why="curious"),
        lambda: eve.fix(row_id, {"patient_last_name": "x"}),
        lambda: release_rows(eve, ids=[row_id]),
    ):
        with pytest.raises((AccessDeniedError, QuarantineRowNotFoundError)):
            attempt()
    denied = [e for e in _audit(eve) if e.actor == EVE and e.action == "access_denied"]
    assert len(denied) >= 3
    eve.store.engine.dispose()


def test_swapped_ciphertexts_fail_to_decrypt(quarantined: StewardService) -> None:
    first, second = (r.id for r in quarantined.list_rows()[:2])
    with quarantined.store.session() as s:
        a = s.get_one(QuarantinedRow, first)
        b = s.get_one(QuarantinedRow, second)
        a.nonce, b.nonce = b.nonce, a.nonce
        a.ciphertext, b.ciphertext = b.ciphertext, a.ciphertext
    with pytest.raises(QuarantineDecryptError):
        quarantined.reveal(first, why="checking a swap")


def test_edited_audit_row_is_detected(
    quarantined: StewardService, scenario: LabFeedScenario, postgres_url: str
) -> None:
    row_id = quarantined.list_rows()[0].id
    quarantined.reveal(row_id, why="routine check")
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as conn:
        # The append-only trigger stops the application; a superuser can still switch it
        # off, and that is exactly what the hash chain is for.
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute("UPDATE audit_events SET reason = 'nothing to see'")
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        conn.execute("UPDATE audit_events SET reason = 'nothing to see' WHERE action = 'reveal'")
        conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    store = LedgerStore.from_url(postgres_url)
    with store.session() as s:
        assert not verify_chain(s).ok
    store.engine.dispose()
    assert main(["audit", "verify", "--config-dir", str(scenario.config_dir)]) == 11
