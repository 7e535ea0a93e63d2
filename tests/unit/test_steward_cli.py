"""Steward CLI: quarantine commands, report, audit verify, keys rotate; output holds no PHI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from batchbridge.errors import AccessDeniedError, AuditChainError, StewardError
from batchbridge.ledger.audit import event_hash
from batchbridge.ledger.models import AuditEvent
from batchbridge.ledger.store import LedgerStore
from tests.support.steward import LocalLabFeed
from tests.unit.steward_cli_helpers import EVE, KIM, _cli, _listed, _no_canary


def test_list_and_show_print_no_patient_values(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(lab, "quarantine", "list") == 0
    out = capsys.readouterr().out
    assert "local_test_code:unmapped_code" in out and "3 row(s)" in out
    _no_canary(out)
    listed = _listed(lab, capsys, "--reason", "unmapped_code")
    assert len(listed) == 2 and {r["status"] for r in listed} == {"quarantined"}
    for row in _listed(lab, capsys):
        assert _cli(lab, "quarantine", "show", str(row["id"])) == 0
        shown = capsys.readouterr().out
        assert "values masked" in shown
        _no_canary(shown)
    assert _listed(lab, capsys, "--status", "all")


def test_reveal_needs_a_reason_and_fix_release_report_balance(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    (row,) = _listed(lab, capsys, "--reason", "patient_last_name:required")
    row_id = str(row["id"])
    assert _cli(lab, "quarantine", "show", row_id, "--reveal") == StewardError.exit_code
    assert "reason" in capsys.readouterr().err
    assert _cli(lab, "quarantine", "show", row_id, "--reveal", "--why", "ticket 9") == 0
    assert "values revealed" in capsys.readouterr().out

    assert _cli(lab, "quarantine", "fix", row_id, "--set", "patient_lastname=x") == 10
    assert "unknown column" in capsys.readouterr().err
    assert _cli(lab, "quarantine", "fix", row_id, "--set", "patient_last_name=Fixed") == 0
    assert _cli(lab, "quarantine", "release", row_id) == 0
    out = capsys.readouterr().out
    assert "released     1" in out and "file balanced yes" in out

    assert _cli(lab, "report", row["file_id"]) == 0
    out = capsys.readouterr().out
    assert "read 30 = loaded at first run 27 + loaded after fix 1 + still quarantined 2" in out
    assert "balanced yes" in out
    assert _cli(lab, "report", row["file_id"], "--json") == 0
    assert json.loads(capsys.readouterr().out)["balanced"] is True

    # The nightly run's report, then the release run's report, each with today's balance.
    assert _cli(lab, "report", row["run_id"]) == 0
    out = capsys.readouterr().out
    assert "LAB_RESULTS_ACME_20261120" in out and "loaded after fix 1" in out
    store = LedgerStore.from_url(lab.settings.database_url)
    with store.session() as s:
        (release_run,) = s.scalars(
            select(AuditEvent.details).where(AuditEvent.action == "release")
        ).all()
    store.engine.dispose()
    assert release_run is not None
    assert _cli(lab, "report", str(release_run["run_id"])) == 0
    assert "release run" in capsys.readouterr().out
    assert _cli(lab, "report", "no-such-id") == StewardError.exit_code
    _no_canary(capsys.readouterr().out)


def test_export_import_discard_and_bulk_release(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    export = tmp_path / "fix.csv"
    # --why is required: a usage error, one line, before anything is read
    assert _cli(lab, "quarantine", "export", str(export), "--feed", "lab_results") == 2
    capsys.readouterr()
    assert (
        _cli(lab, "quarantine", "export", str(export), "--feed", "lab_results", "--why", "batch")
        == 0
    )
    with export.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    for row in rows:
        if not row["patient_last_name"]:
            row["patient_last_name"] = "Fixed"
    with export.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert _cli(lab, "quarantine", "import", str(export), "--why", "batch") == 0
    assert "1 row(s) changed" in capsys.readouterr().out

    (unmapped, _) = _listed(lab, capsys, "--reason", "unmapped_code")
    assert _cli(lab, "quarantine", "discard", str(unmapped["id"])) == 2  # --why is required
    capsys.readouterr()
    assert _cli(lab, "quarantine", "discard", str(unmapped["id"]), "--why", "test order") == 0
    assert "discarded" in capsys.readouterr().out
    lab.add_mapping("ZZ-NOT-IN-MAP", "2345-7", "Glucose", False)
    assert _cli(lab, "quarantine", "release", "--feed", "lab_results", "--json") == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    # The surname fixed by import and the unmapped row left: both pass now.
    assert totals["released"] == 2 and totals["still_quarantined"] == 0
    assert _listed(lab, capsys) == []


def test_other_tenant_and_shared_account_get_exit_10(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    row_id = str(_listed(lab, capsys)[0]["id"])
    monkeypatch.setenv("BATCHBRIDGE_ACTOR", EVE)
    assert _cli(lab, "quarantine", "show", row_id) == StewardError.exit_code
    assert "quarantine_row_not_found" in capsys.readouterr().err
    assert _cli(lab, "quarantine", "list", "--tenant", "acme_lab") == AccessDeniedError.exit_code
    assert "no steward role for tenant acme_lab" in capsys.readouterr().err
    monkeypatch.setenv("BATCHBRIDGE_ACTOR", "root")
    assert _cli(lab, "quarantine", "list") == AccessDeniedError.exit_code
    assert "shared account" in capsys.readouterr().err


def test_keys_rotate_needs_admin(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = lab.loaded().config.quarantine_key
    lab.update_yaml(
        quarantine_key=lab.new_secret("quarantine_key_2"), quarantine_previous_keys=[old]
    )
    assert _cli(lab, "keys", "rotate", "--feed", "lab_results") == AccessDeniedError.exit_code
    monkeypatch.setenv("BATCHBRIDGE_ACTOR", KIM)
    capsys.readouterr()
    assert _cli(lab, "keys", "rotate", "--feed", "lab_results") == 0
    assert "3 row(s) re-encrypted" in capsys.readouterr().out


def _events(lab: LocalLabFeed) -> tuple[LedgerStore, list[AuditEvent]]:
    store = LedgerStore.from_url(lab.settings.database_url)
    with store.session() as s:
        return store, list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


@pytest.fixture
def audited(lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]) -> LocalLabFeed:
    for row in _listed(lab, capsys):
        assert _cli(lab, "quarantine", "show", str(row["id"]), "--reveal", "--why", "review") == 0
    assert _cli(lab, "audit", "verify") == 0
    # One audited listing, then three audited reveals.
    assert "4 event(s) checked, chain intact" in capsys.readouterr().out
    return lab


def test_audit_verify_detects_an_edited_event(
    audited: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    store, events = _events(audited)
    with store.session() as s:
        s.execute(update(AuditEvent).where(AuditEvent.id == events[1].id).values(reason="nothing"))
    store.engine.dispose()
    assert _cli(audited, "audit", "verify") == AuditChainError.exit_code
    assert f"event {events[1].id}: content does not match its hash" in capsys.readouterr().out


def test_audit_verify_detects_an_inserted_event(
    audited: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    store, events = _events(audited)
    first = events[0]
    forged: dict[str, Any] = {
        "at": first.at,
        "actor": "someone@acme-health.example",
        "action": "show",
        "tenant": first.tenant,
        "object_type": first.object_type,
        "object_ids": first.object_ids,
        "reason": None,
        "details": None,
        "prev_hash": first.hash,
    }
    with store.session() as s:
        # Make room after the first event, then slip in a correctly hashed forgery.
        for event in reversed(events[1:]):
            s.execute(update(AuditEvent).where(AuditEvent.id == event.id).values(id=event.id + 1))
        s.add(AuditEvent(id=first.id + 1, hash=event_hash(**forged), **forged))
    store.engine.dispose()
    assert _cli(audited, "audit", "verify") == AuditChainError.exit_code
    out = capsys.readouterr().out
    assert f"event {first.id + 2}: does not follow the previous event" in out
    assert "edited" not in out  # the forgery itself hashes correctly: the chain catches it


def test_audit_verify_detects_a_deleted_event(
    audited: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    store, events = _events(audited)
    with store.session() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.id == events[1].id))
    store.engine.dispose()
    assert _cli(audited, "audit", "verify") == AuditChainError.exit_code
    out = capsys.readouterr().out
    assert f"event {events[2].id}: does not follow the previous event" in out
