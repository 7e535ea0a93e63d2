"""Steward service on SQLite: list, show, reveal, fix, export/import, release, discard, keys."""

from __future__ import annotations

import csv
import sqlite3
import stat
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from batchbridge.config.stewards import Role, StewardDirectory
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.errors import (
    AccessDeniedError,
    ImportRejectedError,
    QuarantineRowNotFoundError,
    RowStateError,
    StewardError,
)
from batchbridge.ledger.audit import verify_chain
from batchbridge.ledger.crypto import QuarantineDecryptError
from batchbridge.ledger.models import (
    AuditEvent,
    Load,
    QuarantinedRow,
    QuarantineEdit,
    QuarantineStatus,
    Run,
)
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.csv_files import neutralise, unneutralise
from batchbridge.steward.release import FeedRelease, release_rows
from batchbridge.steward.release_report import RELEASE_REPORT_KIND
from batchbridge.steward.service import StewardService, mask
from tests.support.steward import LocalLabFeed, build_local_lab_feed

FILE_DATE = date(2026, 11, 20)
CANARIES = ["Zebulonquix", "Orvillecanary"]
FIXED_NAME = "Quillfeatherby"  # a value stewards type in: never in the audit log either
DANA = "dana.steward@acme-health.example"
OMAR = "omar.viewer@acme-health.example"
KIM = "kim.admin@acme-health.example"
EVE = "eve.steward@globex.example"
DIRECTORY = StewardDirectory(
    stewards={
        DANA: {"acme_lab": Role.STEWARD},
        OMAR: {"acme_lab": Role.VIEWER},
        KIM: {"acme_lab": Role.ADMIN},
        EVE: {"globex": Role.STEWARD},
    }
)


@pytest.fixture
def lab(tmp_path: Path) -> LocalLabFeed:
    return build_local_lab_feed(tmp_path)


@pytest.fixture
def file_id(lab: LocalLabFeed) -> str:
    rows = generate_lab_rows(
        30,
        seed=7,
        file_date=FILE_DATE,
        bad_rows={"missing_last_name": 1, "bad_npi": 1, "unmapped_code": 3},
        canary_names=CANARIES,
    )
    return lab.ingest(rows, file_date=FILE_DATE)


@pytest.fixture
def store(lab: LocalLabFeed) -> Iterator[LedgerStore]:
    ledger = LedgerStore.from_url(lab.settings.database_url)
    yield ledger
    ledger.engine.dispose()


def _service(store: LedgerStore, lab: LocalLabFeed, actor: str = DANA) -> StewardService:
    return StewardService(store, config_dir=lab.config_dir, directory=DIRECTORY, actor=actor)


@pytest.fixture
def dana(store: LedgerStore, lab: LocalLabFeed, file_id: str) -> StewardService:
    return _service(store, lab)


def _one(service: StewardService, reason: str) -> int:
    (row,) = service.list_rows(reason=reason)
    return row.id


def _audit(store: LedgerStore) -> list[AuditEvent]:
    with store.session() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def _warehouse(lab: LocalLabFeed) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(lab.warehouse_path) as conn:
        conn.row_factory = sqlite3.Row
        return {row["record_id"]: dict(row) for row in conn.execute("SELECT * FROM lab_result")}


def _assert_no_canary(text: str) -> None:
    for canary in [*CANARIES, FIXED_NAME]:
        assert canary.lower() not in text.lower()


def test_list_filters_and_shows_no_values(dana: StewardService, file_id: str) -> None:
    listed = dana.list_rows()
    assert len(listed) == 5
    assert {r.file_id for r in listed} == {file_id}
    assert all(r.file_name.startswith("LAB_RESULTS_ACME_20261120") for r in listed)
    _assert_no_canary(repr(listed))
    assert len(dana.list_rows(reason="unmapped_code")) == 3
    assert len(dana.list_rows(reason="local_test_code:unmapped_code")) == 3
    assert len(dana.list_rows(reason="patient_last_name:unmapped_code")) == 0
    assert len(dana.list_rows(feed="lab_results", file_id=file_id)) == 5
    assert len(dana.list_rows(run_id=listed[0].run_id)) == 5
    assert dana.list_rows(status="released") == []
    assert len(dana.list_rows(status=None)) == 5
    with pytest.raises(StewardError, match="unknown status"):
        dana.list_rows(status="fixd")


def test_show_is_masked_and_reveal_is_audited(
    dana: StewardService, store: LedgerStore, lab: LocalLabFeed
) -> None:
    row_id = _one(dana, "patient_last_name:required")
    masked = dana.show(row_id)
    assert not masked.revealed
    assert masked.values["patient_last_name"] == ""
    first = masked.values["patient_first_name"]
    assert first is not None and "…" in first
    _assert_no_canary(repr(masked.values))

    with pytest.raises(StewardError, match="reason"):
        dana.reveal(row_id, why="  ")
    clear = dana.reveal(row_id, why="ticket 4711: confirm the surname")
    assert clear.revealed
    value = clear.values["patient_first_name"]
    assert value is not None and mask(value) == first
    event = _audit(store)[-1]
    assert (event.action, event.actor, event.reason) == (
        "reveal",
        DANA,
        "ticket 4711: confirm the surname",
    )
    assert event.object_ids == [str(row_id)] and event.tenant == "acme_lab"

    omar = _service(store, lab, OMAR)
    assert omar.show(row_id).values["patient_first_name"] == first
    with pytest.raises(AccessDeniedError, match="viewer for tenant acme_lab; reveal needs steward"):
        omar.reveal(row_id, why="curious")
    denied = _audit(store)[-1]
    assert denied.action == "access_denied" and denied.details == {"attempted": "reveal"}


def test_fix_records_encrypted_before_and_after(dana: StewardService, store: LedgerStore) -> None:
    row_id = _one(dana, "patient_last_name:required")
    with store.session() as s:
        before_nonce = s.get_one(QuarantinedRow, row_id).nonce
    with pytest.raises(StewardError, match=r"unknown column.*patient_surname"):
        dana.fix(row_id, {"patient_surname": FIXED_NAME})
    with pytest.raises(StewardError, match=r"1 name.*not column names") as pasted:
        dana.fix(row_id, {f"{FIXED_NAME} Okafor": "x"})  # a value pasted as a column name
    _assert_no_canary(str(pasted.value))
    dana.fix(row_id, {"patient_last_name": FIXED_NAME}, why="surname from the clinic")
    with store.session() as s:
        row = s.get_one(QuarantinedRow, row_id)
        edits = list(s.scalars(select(QuarantineEdit)))
    assert row.nonce != before_nonce and FIXED_NAME.encode() not in row.ciphertext
    assert len(edits) == 1
    assert edits[0].columns == ["patient_last_name"] and edits[0].actor == DANA
    assert FIXED_NAME.encode() not in edits[0].ciphertext

    shown = dana.reveal(row_id, why="check the fix")
    assert shown.values["patient_last_name"] == FIXED_NAME
    assert shown.edits[0].before == {"patient_last_name": ""}
    assert shown.edits[0].after == {"patient_last_name": FIXED_NAME}
    assert dana.show(row_id).edits[0].after is None  # masked view: who/when/columns only

    fix_event = next(e for e in _audit(store) if e.action == "fix")
    assert fix_event.details == {"columns": ["patient_last_name"]}
    assert fix_event.reason == "surname from the clinic"

    dana.fix(row_id, {"patient_last_name": FIXED_NAME})  # same value: nothing recorded
    with store.session() as s:
        assert len(list(s.scalars(select(QuarantineEdit)))) == 1


def test_release_loads_fixed_row_with_lineage_once(
    dana: StewardService, store: LedgerStore, lab: LocalLabFeed, file_id: str
) -> None:
    row_id = _one(dana, "patient_last_name:required")
    before = _warehouse(lab)
    record_id = dana.reveal(row_id, why="which record").values["record_id"]
    assert record_id not in before

    dana.fix(row_id, {"patient_last_name": FIXED_NAME})
    first = release_rows(dana, ids=[row_id])
    assert (first.released, first.still_quarantined, first.errors) == (1, 0, [])

    after = _warehouse(lab)
    assert len(after) == len(before) + 1
    loaded = after[str(record_id)]
    with store.session() as s:
        row = s.get_one(QuarantinedRow, row_id)
        run = s.get_one(Run, first.runs[0].run_id)
        loads = list(s.scalars(select(Load).where(Load.run_id == run.id)))
    assert loaded["file_id"] == file_id and loaded["source_row"] == row.row_number
    assert loaded["load_id"] == row.released_load_id == loads[0].id
    assert row.status == QuarantineStatus.RELEASED and row.settled_by == DANA
    assert run.is_rerun and run.status == "succeeded"
    assert run.report is not None and run.report["kind"] == RELEASE_REPORT_KIND
    assert "patient_last_name" not in loaded  # data minimization holds for released rows too

    again = release_rows(dana, ids=[row_id])
    assert again.released == 0 and again.skipped == {row_id: "released already"}
    assert _warehouse(lab) == after

    balance = dana.file_balance(file_id)
    assert (balance.rows_read, balance.loaded_first_run, balance.loaded_after_fix) == (30, 25, 1)
    assert balance.still_quarantined == 4 and balance.balanced


def test_still_invalid_rows_keep_quarantine_with_new_reasons(
    dana: StewardService, store: LedgerStore
) -> None:
    row_id = _one(dana, "patient_last_name:required")
    dana.fix(row_id, {"patient_last_name": FIXED_NAME, "patient_sex": "X"})
    released = release_rows(dana, ids=[row_id])
    assert released.released == 0 and released.still_quarantined == 1
    assert released.files[0].new_reasons == {"patient_sex:one_of": 1}
    with store.session() as s:
        row = s.get_one(QuarantinedRow, row_id)
    assert row.status == QuarantineStatus.QUARANTINED
    assert row.reasons == ["patient_sex:one_of"]


def test_bulk_release_by_rule_after_a_mapping_update(
    dana: StewardService, lab: LocalLabFeed, file_id: str
) -> None:
    before = len(_warehouse(lab))
    early = release_rows(dana, feed="lab_results", reason="unmapped_code")
    assert (early.selected, early.released, early.still_quarantined) == (3, 0, 3)

    lab.add_mapping("ZZ-NOT-IN-MAP", "2345-7", "Glucose [Mass/volume] in Serum or Plasma", False)
    bulk = release_rows(dana, feed="lab_results", reason="local_test_code:unmapped_code")
    assert (bulk.selected, bulk.released, bulk.still_quarantined) == (3, 3, 0)
    assert len(_warehouse(lab)) == before + 3
    assert dana.list_rows(reason="unmapped_code") == []
    assert dana.file_balance(file_id).balanced


def test_crash_between_target_commit_and_ledger_update_is_safe(
    dana: StewardService, lab: LocalLabFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab.add_mapping("ZZ-NOT-IN-MAP", "2345-7", "Glucose", False)

    def crash(*_args: object, **_kwargs: object) -> None:
        raise StewardError("simulated crash after the target committed")

    with monkeypatch.context() as patched:
        patched.setattr(FeedRelease, "_settle", crash)
        crashed = release_rows(dana, feed="lab_results", reason="unmapped_code")
    assert crashed.released == 0 and crashed.errors
    loaded = _warehouse(lab)
    assert len(dana.list_rows(reason="unmapped_code")) == 3  # still quarantined

    retried = release_rows(dana, feed="lab_results", reason="unmapped_code")
    assert retried.released == 3
    assert retried.files[0].targets["warehouse"].unchanged == 3  # upserts: nothing doubled
    assert _warehouse(lab).keys() == loaded.keys()


def test_export_import_round_trip_neutralises_formulas(
    dana: StewardService, store: LedgerStore, tmp_path: Path
) -> None:
    npi_row = _one(dana, "ordering_provider_npi:npi_luhn")
    name_row = _one(dana, "patient_last_name:required")
    formula = '=HYPERLINK("http://evil.example","x")'
    dana.fix(npi_row, {"test_name": formula, "reference_range": "-5"})

    export = tmp_path / "fix-me.csv"
    with pytest.raises(StewardError, match="reason"):
        dana.export_rows(export, ids=[npi_row], why="")
    assert dana.export_rows(export, ids=[npi_row, name_row], why="NPI batch") == 2
    assert stat.S_IMODE(export.stat().st_mode) == 0o600
    with pytest.raises(StewardError, match="exists"):
        dana.export_rows(export, ids=[npi_row], why="again")
    with export.open(encoding="utf-8", newline="") as handle:
        exported = list(csv.DictReader(handle))
    by_id = {int(r["quarantine_id"]): r for r in exported}
    assert by_id[npi_row]["test_name"] == "'" + formula
    assert by_id[npi_row]["reference_range"] == "'-5"

    by_id[npi_row]["ordering_provider_npi"] = "1234567893"
    with export.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(exported[0]))
        writer.writeheader()
        writer.writerows(by_id.values())
    assert dana.import_rows(export, why="NPI batch") == 1  # the other row is unchanged
    shown = dana.reveal(npi_row, why="check import")
    assert shown.values["ordering_provider_npi"] == "1234567893"
    assert shown.values["test_name"] == formula and shown.values["reference_range"] == "-5"
    assert shown.edits[-1].source == "import"
    assert shown.edits[-1].columns == ["ordering_provider_npi"]

    actions = [e.action for e in _audit(store)]
    assert "export" in actions and "import" in actions
    export_event = next(e for e in _audit(store) if e.action == "export")
    assert sorted(export_event.object_ids) == sorted([str(npi_row), str(name_row)])
    assert release_rows(dana, ids=[npi_row]).released == 1


def test_mask_shows_first_character_and_length_only() -> None:
    assert mask("Zebulonquix") == "Z… (11)"
    assert mask("F") == "… (1)" and mask("HH") == "… (2)"
    assert mask("") == "" and mask(None) is None


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@x", "\tx", "\rx", "'x", "''", "plain", ""])
def test_neutralise_round_trips(cell: str) -> None:
    assert unneutralise(neutralise(cell)) == cell
    assert not neutralise(cell).startswith(("=", "+", "-", "@", "\t", "\r"))


def _write_import(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["quarantine_id", "patient_last_name"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_import_with_unknown_or_foreign_ids_applies_nothing(
    store: LedgerStore, tmp_path: Path, file_id: str
) -> None:
    globex = build_local_lab_feed(tmp_path, feed="globex_results", tenant="globex")
    globex.ingest(
        generate_lab_rows(10, seed=3, file_date=FILE_DATE, bad_rows={"bad_sex": 1}),
        file_date=FILE_DATE,
    )
    dana = _service(store, globex)
    eve = _service(store, globex, EVE)
    acme_row = _one(dana, "patient_last_name:required")
    (globex_row,) = eve.list_rows()

    def edits() -> int:
        with store.session() as s:
            return len(list(s.scalars(select(QuarantineEdit))))

    good = {"quarantine_id": str(acme_row), "patient_last_name": FIXED_NAME}
    unknown = _write_import(
        tmp_path / "unknown.csv", [good, {"quarantine_id": "999", "patient_last_name": "x"}]
    )
    with pytest.raises(ImportRejectedError, match=r"nothing applied.*999"):
        dana.import_rows(unknown)
    foreign = _write_import(
        tmp_path / "foreign.csv",
        [good, {"quarantine_id": str(globex_row.id), "patient_last_name": "x"}],
    )
    with pytest.raises(ImportRejectedError, match=f"ids {globex_row.id} unknown or not in"):
        dana.import_rows(foreign)
    denied = _audit(store)[-1]
    assert (denied.action, denied.tenant, denied.details) == (
        "access_denied",
        "globex",
        {"attempted": "import"},
    )
    bad_column = tmp_path / "column.csv"
    bad_column.write_text(f"quarantine_id,patient_surname\n{acme_row},x\n", encoding="utf-8")
    with pytest.raises(ImportRejectedError, match="patient_surname"):
        dana.import_rows(bad_column)
    assert edits() == 0

    dana.discard(_one(dana, "ordering_provider_npi:npi_luhn"), reason="duplicate order")
    (npi_row,) = dana.list_rows(reason="npi_luhn", status="discarded")
    settled = _write_import(
        tmp_path / "settled.csv",
        [good, {"quarantine_id": str(npi_row.id), "patient_last_name": "x"}],
    )
    with pytest.raises(ImportRejectedError, match="released or discarded"):
        dana.import_rows(settled)
    assert edits() == 0
    assert dana.import_rows(_write_import(tmp_path / "ok.csv", [good])) == 1


def test_discard_is_terminal_and_counted(
    dana: StewardService, store: LedgerStore, file_id: str
) -> None:
    row_id = _one(dana, "ordering_provider_npi:npi_luhn")
    with pytest.raises(StewardError, match="reason"):
        dana.discard(row_id, reason=" ")
    dana.discard(row_id, reason="partner resent the result under a new id")
    with store.session() as s:
        row = s.get_one(QuarantinedRow, row_id)
    assert row.status == QuarantineStatus.DISCARDED and row.settled_by == DANA
    assert row.settle_reason == "partner resent the result under a new id"
    with pytest.raises(RowStateError):
        dana.fix(row_id, {"ordering_provider_npi": "1234567893"})
    with pytest.raises(RowStateError):
        dana.discard(row_id, reason="again")
    assert release_rows(dana, ids=[row_id]).skipped == {row_id: "discarded already"}
    balance = dana.file_balance(file_id)
    assert balance.discarded == 1 and balance.still_quarantined == 4 and balance.balanced
    *_, event, balance_view = _audit(store)
    assert event.action == "discard" and event.reason == row.settle_reason
    assert balance_view.action == "report"  # looking at a balance is audited too


def test_other_tenants_rows_are_refused_and_audited(
    store: LedgerStore, tmp_path: Path, file_id: str
) -> None:
    globex = build_local_lab_feed(tmp_path, feed="globex_results", tenant="globex")
    eve = _service(store, globex, EVE)
    acme_row = _service(store, globex).list_rows()[0].id
    assert eve.list_rows() == []

    with pytest.raises(QuarantineRowNotFoundError) as missing:
        eve.show(99999)
    attempts = {
        "show": lambda: eve.show(acme_row),
        "reveal": lambda: eve.reveal(acme_row, why="curious"),
        "fix": lambda: eve.fix(acme_row, {"patient_last_name": "x"}),
        "release": lambda: release_rows(eve, ids=[acme_row]),
        "discard": lambda: eve.discard(acme_row, reason="x"),
        "export": lambda: eve.export_rows(tmp_path / "x.csv", ids=[acme_row], why="x"),
    }
    for attempt in attempts.values():
        with pytest.raises(QuarantineRowNotFoundError) as refused:
            attempt()
        # Indistinguishable from a missing row: same message shape, no tenant named.
        assert str(refused.value) == str(missing.value).replace("99999", str(acme_row))
        assert "acme_lab" not in str(refused.value)
    with pytest.raises(AccessDeniedError, match="has no steward role for tenant acme_lab"):
        eve.list_rows(tenant="acme_lab")
    with pytest.raises(AccessDeniedError, match="has no steward role for tenant acme_lab"):
        release_rows(eve, feed="lab_results")
    with pytest.raises(AccessDeniedError):
        eve.rotate_keys("lab_results")
    with pytest.raises(StewardError, match="no file"):
        eve.file_balance(file_id)

    denied = [e for e in _audit(store) if e.action == "access_denied"]
    assert {e.details["attempted"] for e in denied if e.details} >= {*attempts, "list", "report"}
    assert all(e.actor == EVE and e.tenant == "acme_lab" for e in denied)
    assert not (tmp_path / "x.csv").exists()
    with store.session() as s:
        assert verify_chain(s).ok


def test_shared_accounts_and_blank_identities_are_refused(
    store: LedgerStore, lab: LocalLabFeed
) -> None:
    for actor in ("root", "Postgres", "batchbridge", "  "):
        with pytest.raises(AccessDeniedError):
            _service(store, lab, actor)


def test_rotation_keeps_old_rows_readable_then_moves_all_to_the_new_key(
    dana: StewardService, store: LedgerStore, lab: LocalLabFeed
) -> None:
    old_ref = lab.loaded().config.quarantine_key
    row_id = _one(dana, "patient_last_name:required")
    dana.fix(row_id, {"patient_last_name": FIXED_NAME})
    with store.session() as s:
        old_key = s.get_one(QuarantinedRow, row_id).key_id

    lab.update_yaml(
        quarantine_key=lab.new_secret("quarantine_key_2"), quarantine_previous_keys=[old_ref]
    )
    # Mid-rotation: old rows open with the previous key, new writes use the new key.
    assert dana.reveal(row_id, why="read during rotation").values["patient_last_name"] == FIXED_NAME
    other = _one(dana, "ordering_provider_npi:npi_luhn")
    dana.fix(other, {"ordering_provider_npi": "1234567893"})
    with store.session() as s:
        keys = {r.id: r.key_id for r in s.scalars(select(QuarantinedRow))}
    new_key = keys[other]
    assert new_key != old_key and keys[row_id] == old_key

    with pytest.raises(AccessDeniedError, match="rotate_keys needs admin"):
        dana.rotate_keys("lab_results")
    kim = _service(store, lab, KIM)
    assert kim.rotate_keys("lab_results") == 4
    assert kim.rotate_keys("lab_results") == 0
    with store.session() as s:
        assert {r.key_id for r in s.scalars(select(QuarantinedRow))} == {new_key}
        assert {e.key_id for e in s.scalars(select(QuarantineEdit))} == {new_key}
    first, second = (e for e in _audit(store) if e.action == "rotate_keys")
    assert first.actor == KIM and first.details == {"key_id": new_key, "rows": 4, "edits": 1}
    assert second.details == {"key_id": new_key, "rows": 0, "edits": 0}

    lab.update_yaml(quarantine_previous_keys=[])
    shown = dana.reveal(row_id, why="after rotation")
    assert shown.values["patient_last_name"] == FIXED_NAME
    assert shown.edits[0].after == {"patient_last_name": FIXED_NAME}


def test_removing_the_previous_key_too_early_fails_loudly(
    dana: StewardService, lab: LocalLabFeed
) -> None:
    row_id = _one(dana, "patient_last_name:required")
    lab.update_yaml(quarantine_key=lab.new_secret("quarantine_key_2"))
    with pytest.raises(QuarantineDecryptError, match="quarantine_previous_keys"):
        dana.show(row_id)


def test_audit_log_holds_no_patient_values(
    dana: StewardService, store: LedgerStore, lab: LocalLabFeed, tmp_path: Path
) -> None:
    for row in dana.list_rows():
        dana.reveal(row.id, why="review")
    row_id = _one(dana, "patient_last_name:required")
    dana.fix(row_id, {"patient_last_name": FIXED_NAME}, why="from the clinic")
    dana.export_rows(tmp_path / "e.csv", feed="lab_results", why="batch")
    lab.add_mapping("ZZ-NOT-IN-MAP", "2345-7", "Glucose", False)
    release_rows(dana, feed="lab_results")
    events = _audit(store)
    assert len(events) >= 8
    _assert_no_canary(repr([vars(e) for e in events]))
    with store.session() as s:
        assert verify_chain(s).ok
