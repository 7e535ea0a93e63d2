"""The second reference feed, end to end: the shipped patient_roster.yaml, gpg-made files
on a real sshd, through the same Prefect flow, into real PostgreSQL, as its own tenant;
and into a FHIR server (the test server process), where full snapshots mark Patients."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

from batchbridge.config import load_feed
from batchbridge.connectors.targets.base import LoadRequest
from batchbridge.connectors.targets.fhir import FhirTarget
from batchbridge.demo.scenario import LabFeedScenario
from batchbridge.validations.base import ROW_COLUMN, FhirIdentity
from batchbridge.validations.schemas.patient_roster import OUTPUT_COLUMNS
from batchbridge.validations.schemas.patient_roster import SCHEMA as PATIENT_ROSTER
from tests.integration.flow_helpers import libpq_url, run_flow
from tests.support.feed_scenarios import build_shipped_feed_scenario
from tests.support.medplum_fhir import FhirTenant
from tests.support.roster_data import (
    generate_roster_rows,
    render_roster,
    roster_file_name,
)
from tests.support.sshd import SshdServer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

SHIPPED = Path(__file__).resolve().parents[2] / "deployments" / "feeds" / "patient_roster.yaml"
WEEK1 = date(2026, 11, 16)
CANARY = "Quillonvarz"


@pytest.fixture
def roster(
    tmp_path: Path, sshd_server: SshdServer, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LabFeedScenario]:
    monkeypatch.setenv("BB_TEST_ROSTER_URL", postgres_url)
    monkeypatch.setenv("BATCHBRIDGE_DATABASE_URL", postgres_url)
    monkeypatch.setenv("BATCHBRIDGE_STAGING_DIR", str(tmp_path / "staging"))
    shipped_target = load_feed("patient_roster", SHIPPED.parent).config.targets[0]
    target = {
        "name": "registry",
        "kind": "postgres",
        "url": "env:BB_TEST_ROSTER_URL",
        "db_schema": "riverside",
        "table": "member",
        "columns": list(shipped_target.columns),
    }
    built = build_shipped_feed_scenario(tmp_path / "roster", sshd_server.endpoint(), SHIPPED,
                                        targets=[target])  # fmt: skip
    yield built
    built.close()


def members(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(libpq_url(url)) as conn:
        if conn.execute("SELECT to_regclass('riverside.member')").fetchone() == (None,):
            return {}
        cur = conn.execute("SELECT * FROM riverside.member")
        names = [d.name for d in cur.description or []]
        return {row[names.index("member_id")]: dict(zip(names, row, strict=True)) for row in cur}


def drop(scenario: LabFeedScenario, day: date, data: bytes) -> None:
    scenario.drop_file(roster_file_name(day), data)


def test_roster_loads_quarantines_and_marks_absent_members_inactive(
    roster: LabFeedScenario, postgres_url: str
) -> None:
    assert roster.tenant == "riverside_clinic"
    week1 = generate_roster_rows(
        40, seed=1, file_date=WEEK1, bad_rows={"bad_phone": 1, "unmapped_plan": 1},
        canary_names=[CANARY],
    )  # fmt: skip
    drop(roster, WEEK1, render_roster(week1, file_date=WEEK1))

    report = run_flow(roster)
    assert report.status == "succeeded", report.to_dict()
    (first,) = report.files
    assert (first.rows_read, first.rows_declared, first.rows_quarantined) == (40, 40, 2)
    assert first.quarantine_reasons == {"phone:ten_digits": 1, "plan_code:unmapped_code": 1}
    assert first.targets["registry"].inserted == 38
    loaded = members(postgres_url)
    assert len(loaded) == 38 and all(m["active"] for m in loaded.values())
    some = loaded["M000002"]
    assert set(OUTPUT_COLUMNS) <= set(some) and some["tenant"] == "riverside_clinic"
    assert some["birth_date"].year >= 1940 and some["plan_name"]
    assert not some["given"].endswith(" ")  # trailing spaces trimmed

    # Week 2: five members left, a fixed row is back, one new; a quarantined member
    # (bad phone) stays active although it could not be loaded.
    week2_day = WEEK1 + timedelta(days=7)
    ids = ["M000041", *(f"M{i:06d}" for i in range(6, 41) if i != 20), "M000020"]
    week2 = generate_roster_rows(36, seed=1, file_date=week2_day, member_ids=ids,
                                 bad_rows={"bad_email": 1})  # fmt: skip
    drop(roster, week2_day, render_roster(week2, file_date=week2_day))
    second = run_flow(roster)
    assert second.status == "succeeded", second.to_dict()
    (file2,) = second.files
    counts = file2.targets["registry"]
    assert counts.inactivated == 5  # M000001-M000005, not deleted
    after = members(postgres_url)
    gone = {m for m, row in after.items() if not row["active"]}
    assert gone == {f"M{i:06d}" for i in range(1, 6)}
    load_id = next(iter(after[m]["inactivated_by_load"] for m in gone))
    assert all(after[m]["inactivated_by_load"] == load_id for m in gone)
    assert week2["member_id"][-1] == "M000020"  # the planted bad row
    assert after["M000020"]["active"]
    assert counts.inserted == 3  # M000041, and M000039/M000040 fixed since week 1
    assert "M000041" in after

    # Rerun of week 2: nothing changes, nobody else is inactivated.
    again = run_flow(roster, files=[roster_file_name(week2_day)], force=True)
    (file3,) = again.files
    assert file3.targets["registry"].inactivated == 0
    assert file3.targets["registry"].inserted == 0
    assert members(postgres_url) == after


def test_header_count_mismatch_fails_the_file_whole(
    roster: LabFeedScenario, postgres_url: str
) -> None:
    rows = generate_roster_rows(10, seed=2, file_date=WEEK1)
    drop(roster, WEEK1, render_roster(rows, file_date=WEEK1, declared=11))
    report = run_flow(roster)
    (file_report,) = report.files
    assert file_report.outcome == "failed" and file_report.reason == "trailer_mismatch"
    assert "header record says 11 rows, file has 10" in (file_report.message or "")
    assert members(postgres_url) == {}


def test_another_sender_is_refused(roster: LabFeedScenario, postgres_url: str) -> None:
    rows = generate_roster_rows(5, seed=3, file_date=WEEK1)
    drop(roster, WEEK1, render_roster(rows, file_date=WEEK1, sender="SOMEONE_ELSE"))
    (file_report,) = run_flow(roster).files
    assert file_report.outcome == "failed"
    assert "another sender" in (file_report.message or "")
    assert "SOMEONE_ELSE" not in (file_report.message or "")


def test_an_older_roster_loaded_late_marks_nobody_inactive(
    roster: LabFeedScenario, postgres_url: str
) -> None:
    newer_day = WEEK1 + timedelta(days=7)
    drop(roster, newer_day, render_roster(generate_roster_rows(6, seed=4, file_date=newer_day),
                                          file_date=newer_day))  # fmt: skip
    assert run_flow(roster).status == "succeeded"
    older = generate_roster_rows(3, seed=4, file_date=WEEK1)  # M000001-3 only
    drop(roster, WEEK1, render_roster(older, file_date=WEEK1))
    report = run_flow(roster)
    (file_report,) = report.files
    assert file_report.targets["registry"].inactivated == 0
    assert any("newer full file" in note for note in report.notes)
    assert all(m["active"] for m in members(postgres_url).values())


def test_the_file_contract_is_checked_before_download(
    roster: LabFeedScenario, postgres_url: str
) -> None:
    rows = generate_roster_rows(5, seed=6, file_date=WEEK1)
    roster.drop_file("roster_final.txt.gpg", render_roster(rows, file_date=WEEK1))
    report = run_flow(roster)
    (file_report,) = report.files
    assert (file_report.outcome, file_report.failed_stage) == ("failed", "contract")
    assert file_report.reason == "contract_violated"
    assert "does not match the contract pattern" in (file_report.message or "")
    assert members(postgres_url) == {}


def test_a_manifest_contract_waits_for_the_manifest_and_checks_the_bytes(
    tmp_path: Path, sshd_server: SshdServer, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BB_TEST_ROSTER_URL", postgres_url)
    monkeypatch.setenv("BATCHBRIDGE_DATABASE_URL", postgres_url)
    monkeypatch.setenv("BATCHBRIDGE_STAGING_DIR", str(tmp_path / "staging"))
    target = {
        "name": "registry",
        "kind": "postgres",
        "url": "env:BB_TEST_ROSTER_URL",
        "db_schema": "riverside",
        "table": "member",
        "columns": ["patient_key", "plan_code"],
    }
    scenario = build_shipped_feed_scenario(
        tmp_path / "roster", sshd_server.endpoint(), SHIPPED, targets=[target],
        contract={"marker": "manifest"},
    )  # fmt: skip
    try:
        name = roster_file_name(WEEK1)
        path = scenario.drop_file(name, render_roster(generate_roster_rows(4, seed=9,
                                  file_date=WEEK1), file_date=WEEK1))  # fmt: skip
        waiting = run_flow(scenario)
        assert waiting.files == [] and waiting.skipped[name].startswith("awaiting_marker")

        manifest = path.with_name(name + ".manifest")
        manifest.write_text(f"{'0' * 64}  {name}\n")
        (wrong,) = run_flow(scenario).files
        assert (wrong.outcome, wrong.reason) == ("failed", "contract_violated")
        assert "differs from" in (wrong.message or "")

        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest.write_text(f"{digest}  {name}\n")
        (good,) = run_flow(scenario).files
        assert good.outcome == "reconciled" and len(members(postgres_url)) == 4
    finally:
        scenario.close()


# -- the roster into FHIR (full snapshots on a FHIR server) -----------------------------------

ROSTER_SYSTEM = "urn:batchbridge:riverside_clinic:patient_roster"
FHIR_COLUMNS = ["patient_key", "given", "family", "gender", "birth_date"]


@pytest.fixture
def roster_fhir(
    tmp_path: Path,
    sshd_server: SshdServer,
    postgres_url: str,
    real_fhir: FhirTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LabFeedScenario]:
    monkeypatch.setenv("BATCHBRIDGE_DATABASE_URL", postgres_url)
    monkeypatch.setenv("BATCHBRIDGE_STAGING_DIR", str(tmp_path / "staging"))
    target = {
        "name": "fhir",
        "kind": "fhir",
        "base_url": real_fhir.base_url,
        "identifier_system": ROSTER_SYSTEM,
        "columns": FHIR_COLUMNS,
        "bundle_size": 4,
    }
    built = build_shipped_feed_scenario(tmp_path / "roster", sshd_server.endpoint(), SHIPPED,
                                        targets=[target])  # fmt: skip
    yield built
    built.close()


def fhir_members(server: FhirTenant) -> dict[str, dict[str, Any]]:
    """Patients on the server by their value under `ROSTER_SYSTEM`."""
    found: dict[str, dict[str, Any]] = {}
    for patient in server.resources("Patient"):
        for identifier in patient.get("identifier", []):
            if identifier.get("system") == ROSTER_SYSTEM:
                found[identifier["value"]] = patient
    return found


def other_tenant_patients(server: FhirTenant, members: list[str]) -> None:
    """Another clinic's members on the same server, under the same identifier system."""
    rows = pl.DataFrame(
        {
            "member_id": members,
            "patient_key": [f"bay-{m}" for m in members],
            "given": ["Bay"] * len(members),
            "family": ["Side"] * len(members),
            ROW_COLUMN: list(range(1, len(members) + 1)),
        },
        schema_overrides={ROW_COLUMN: pl.UInt32},
    )
    identity = FhirIdentity(ROSTER_SYSTEM, "urn:batchbridge:patient-key")
    columns = ["patient_key", "given", "family"]
    with FhirTarget("bayside", server.base_url, PATIENT_ROSTER, identity, columns,
                    bundle_size=4) as target:  # fmt: skip
        request = LoadRequest(tenant="bayside_clinic", natural_key=("member_id",), load_id="b",
                              file_id="b", rows=rows, full_snapshot=True)  # fmt: skip
        assert target.load(request).rows_inserted == len(members)


def test_roster_to_fhir_inactivates_absent_members_and_reactivates_returning_ones(
    roster_fhir: LabFeedScenario, real_fhir: FhirTenant
) -> None:
    other_tenant_patients(real_fhir, ["B000001", "B000002"])
    week1 = generate_roster_rows(12, seed=1, file_date=WEEK1)
    drop(roster_fhir, WEEK1, render_roster(week1, file_date=WEEK1))
    (first,) = run_flow(roster_fhir).files
    assert first.outcome == "reconciled" and first.balanced
    assert (first.targets["fhir"].inserted, first.targets["fhir"].inactivated) == (12, 0)
    before = fhir_members(real_fhir)

    # Week 2: M000001-3 left, M000013 joined, M000012 is quarantined (bad email): still
    # a member, so still active though not loaded from this file.
    week2_day = WEEK1 + timedelta(days=7)
    ids = ["M000013", *(f"M{i:06d}" for i in range(4, 12)), "M000012"]
    week2 = generate_roster_rows(10, seed=2, file_date=week2_day, member_ids=ids,
                                 bad_rows={"bad_email": 1})  # fmt: skip
    drop(roster_fhir, week2_day, render_roster(week2, file_date=week2_day))
    (second,) = run_flow(roster_fhir).files
    assert second.outcome == "reconciled" and second.balanced
    assert (second.rows_valid, second.rows_quarantined) == (9, 1)
    counts = second.targets["fhir"]
    assert counts.inactivated == 3 and counts.inserted == 1
    assert counts.inserted + counts.updated + counts.unchanged == counts.confirmed == 9
    after = fhir_members(real_fhir)
    assert len(after) == 15  # 13 members + 2 of the other clinic: nobody deleted
    assert {m for m, p in after.items() if p["active"] is False} == {
        "M000001", "M000002", "M000003"
    }  # fmt: skip
    assert after["M000001"]["name"] == before["M000001"]["name"]  # kept, only `active` changed
    assert after["M000001"]["meta"]["versionId"] != before["M000001"]["meta"]["versionId"]
    assert after["M000012"]["active"] is True

    # Week 3: the three are back, with everybody else: active again, counted as updated.
    week3_day = WEEK1 + timedelta(days=14)
    week3 = generate_roster_rows(13, seed=3, file_date=week3_day)
    drop(roster_fhir, week3_day, render_roster(week3, file_date=week3_day))
    (third,) = run_flow(roster_fhir).files
    assert third.outcome == "reconciled" and third.balanced
    assert third.targets["fhir"].inactivated == 0 and third.targets["fhir"].updated >= 3
    back = fhir_members(real_fhir)
    assert all(back[f"M{i:06d}"]["active"] is True for i in range(1, 14))

    # A forced rerun of week 3 changes nothing; the other clinic was never touched.
    (rerun,) = run_flow(roster_fhir, files=[roster_file_name(week3_day)], force=True).files
    fhir = rerun.targets["fhir"]
    assert (fhir.inserted, fhir.updated, fhir.inactivated) == (0, 0, 0)
    assert fhir_members(real_fhir) == back
    assert [back[b]["active"] for b in ("B000001", "B000002")] == [True, True]
    tags = {t["code"] for b in ("B000001", "B000002") for t in back[b]["meta"]["tag"]}
    assert tags == {"bayside_clinic"}


def test_an_older_roster_loaded_late_into_fhir_marks_nobody_inactive(
    roster_fhir: LabFeedScenario, real_fhir: FhirTenant
) -> None:
    newer_day = WEEK1 + timedelta(days=7)
    drop(roster_fhir, newer_day, render_roster(generate_roster_rows(5, seed=4,
         file_date=newer_day), file_date=newer_day))  # fmt: skip
    assert run_flow(roster_fhir).status == "succeeded"
    drop(roster_fhir, WEEK1, render_roster(generate_roster_rows(2, seed=4, file_date=WEEK1),
                                           file_date=WEEK1))  # fmt: skip
    report = run_flow(roster_fhir)
    (late,) = report.files
    assert late.outcome == "reconciled" and late.targets["fhir"].inactivated == 0
    assert any("newer full file" in note for note in report.notes)
    assert all(p["active"] is True for p in fhir_members(real_fhir).values())
