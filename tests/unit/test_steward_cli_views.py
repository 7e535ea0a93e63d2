"""Steward CLI views: age and fixed status, limits, record-id search, audited listings."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from batchbridge.errors import StewardError
from batchbridge.ledger.models import AuditEvent, QuarantinedRow
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.csv_files import REASONS_COLUMN
from batchbridge.steward.queue import quarantined_age as age
from tests.support.steward import LocalLabFeed
from tests.unit.steward_cli_helpers import CANARIES, _cli, _listed, _no_canary


def _audit(lab: LocalLabFeed) -> list[AuditEvent]:
    store = LedgerStore.from_url(lab.settings.database_url)
    with store.session() as s:
        events = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    store.engine.dispose()
    return events


def _record_id(lab: LocalLabFeed, capsys: pytest.CaptureFixture[str], row_id: int) -> str:
    capsys.readouterr()
    args = ["quarantine", "show", str(row_id), "--reveal", "--why", "t1", "--json"]
    assert _cli(lab, *args) == 0
    shown: dict[str, Any] = json.loads(capsys.readouterr().out)
    return str(shown["values"]["record_id"])


def test_age_is_the_largest_whole_unit() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert age(now - timedelta(seconds=42), now) == "42s"
    assert age(now - timedelta(minutes=12, seconds=5), now) == "12m"
    assert age(now - timedelta(hours=5, minutes=59), now) == "5h"
    assert age(now - timedelta(days=3, hours=1), now) == "3d"
    assert age(None, now) == "-"


def test_list_shows_age_fixed_status_and_respects_the_limit(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _listed(lab, capsys)
    assert len(rows) == 3 and all(r["quarantined_at"] and r["fixed"] is False for r in rows)
    name_row = next(r for r in rows if "patient_last_name:required" in r["reasons"])
    fix = ["quarantine", "fix", str(name_row["id"]), "--set", "patient_last_name=Fixed"]
    assert _cli(lab, *fix, "--why", "ticket 12") == 0
    capsys.readouterr()

    (fixed,) = _listed(lab, capsys, "--status", "fixed")
    assert fixed["id"] == name_row["id"] and fixed["fixed"] is True
    assert fixed["status"] == "quarantined"  # still in quarantine until released
    assert len(_listed(lab, capsys, "--status", "quarantined")) == 3

    assert _cli(lab, "quarantine", "list") == 0
    out = capsys.readouterr().out
    assert " fixed " in out and " age " in out and "3 row(s)" in out
    assert _cli(lab, "quarantine", "list", "--limit", "2") == 0
    out = capsys.readouterr().out
    assert "2 of 3 row(s) shown (--limit 0 shows all)" in out
    assert len(_listed(lab, capsys, "--limit", "0")) == 3


def test_a_bad_status_is_a_usage_error_listing_the_choices(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(lab, "quarantine", "list", "--status", "bogus") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error [usage]:")
    for choice in ("quarantined", "fixed", "released", "discarded", "all"):
        assert choice in err
    assert "Traceback" not in err


def test_record_id_search_is_exact_audited_and_never_logs_the_id(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    row = _listed(lab, capsys)[0]
    record_id = _record_id(lab, capsys, row["id"])
    (found,) = _listed(lab, capsys, "--record-id", record_id)
    assert found["id"] == row["id"]
    assert _listed(lab, capsys, "--record-id", record_id + "0") == []
    assert _listed(lab, capsys, "--record-id", record_id[:-1]) == []  # exact, not a prefix

    searches = [e for e in _audit(lab) if e.action == "search"]
    assert [e.object_ids for e in searches] == [[str(row["id"])], [], []]
    assert all(e.details == {"by": "record_id", "matched": len(e.object_ids)} for e in searches)
    assert not any(record_id in json.dumps(e.details) + str(e.reason) for e in _audit(lab))


def test_record_id_search_finds_rows_quarantined_before_the_hash_existed(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    row = _listed(lab, capsys)[0]
    record_id = _record_id(lab, capsys, row["id"])
    store = LedgerStore.from_url(lab.settings.database_url)
    with store.session() as s:
        s.execute(update(QuarantinedRow).values(record_hash=None))
    store.engine.dispose()
    (found,) = _listed(lab, capsys, "--record-id", record_id)
    assert found["id"] == row["id"]


def test_a_fix_of_the_record_id_moves_its_search_hash(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    row = _listed(lab, capsys)[0]
    old = _record_id(lab, capsys, row["id"])
    fix = ["quarantine", "fix", str(row["id"]), "--set", "record_id=NEW-000123"]
    assert _cli(lab, *fix) == 0
    capsys.readouterr()
    assert _listed(lab, capsys, "--record-id", old) == []
    assert [r["id"] for r in _listed(lab, capsys, "--record-id", "NEW-000123")] == [row["id"]]


def test_listings_and_reports_are_audited(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _listed(lab, capsys, "--reason", "unmapped_code")
    assert _cli(lab, "report", rows[0]["file_id"]) == 0
    assert _cli(lab, "report", rows[0]["run_id"]) == 0
    events = [(e.action, e.object_type) for e in _audit(lab)]
    assert events == [("list", "quarantined_row"), ("report", "file"), ("report", "run")]
    listing = _audit(lab)[0]
    assert listing.details == {
        "filters": {"reason": "unmapped_code", "status": "quarantined", "offset": 0, "limit": 100},
        "matched": 2,
    }
    assert sorted(listing.object_ids) == sorted(str(r["id"]) for r in rows)


def test_export_carries_the_reasons_and_import_ignores_them(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    export = tmp_path / "fix.csv"
    assert (
        _cli(lab, "quarantine", "export", str(export), "--feed", "lab_results", "--why", "t") == 0
    )
    with export.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:2] == ["quarantine_id", REASONS_COLUMN]
    assert {r[REASONS_COLUMN] for r in rows} == {
        "patient_last_name:required",
        "local_test_code:unmapped_code",
    }
    for row in rows:
        row[REASONS_COLUMN] = "edited by a curious steward"
    with export.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert _cli(lab, "quarantine", "import", str(export), "--why", "t") == 0
    assert "0 row(s) changed" in capsys.readouterr().out


def test_a_release_that_releases_nothing_says_so_and_fails(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    (row, _) = _listed(lab, capsys, "--reason", "unmapped_code")
    capsys.readouterr()
    assert _cli(lab, "quarantine", "release", str(row["id"]), "--why", "t") == (
        StewardError.exit_code
    )
    printed = capsys.readouterr()
    assert "still quarantined     1" in printed.out
    assert printed.err.startswith("nothing released")
    _no_canary(printed.out + printed.err)


def test_ids_are_positional_and_may_be_comma_separated(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [str(r["id"]) for r in _listed(lab, capsys, "--reason", "unmapped_code")]
    capsys.readouterr()
    assert _cli(lab, "quarantine", "release", ",".join(ids)) == StewardError.exit_code
    assert "selected     2" in capsys.readouterr().out
    assert _cli(lab, "quarantine", "release", "x1") == 2
    err = capsys.readouterr().err
    assert err.startswith("error [usage]:") and "x1" not in err
    assert all(c.lower() not in err.lower() for c in CANARIES)


def test_run_and_file_filters_take_unique_prefixes(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    row = _listed(lab, capsys)[0]
    by_run = _listed(lab, capsys, "--run", row["run_id"][:8])
    by_file = _listed(lab, capsys, "--file", row["file_id"][:6])
    assert len(by_run) == len(by_file) == 3
    assert _cli(lab, "quarantine", "list", "--run", "ffffffff") == 2
    assert "no run id starts with ffffffff" in capsys.readouterr().err
