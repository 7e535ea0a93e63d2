"""FhirTarget against a real FHIR R4 server (Medplum's FHIR router, tests/support/medplum_fhir.py).

Each test gets an empty tenant of one server process. What the server answers is Medplum's
own: transaction processing, conditional create/update, OperationOutcomes, validation. Where
it differs from the home-made server (kept for fault injection only), the test says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import polars as pl
import pytest

from batchbridge.connectors.targets.base import LoadResult
from batchbridge.connectors.targets.fhir import FhirTarget
from batchbridge.demo.lab_data import LAB_TESTS
from batchbridge.demo.scenario import LAB_TARGET_COLUMNS
from batchbridge.validations.base import (
    ROW_COLUMN,
)
from batchbridge.validations.schemas.lab_results import LAB_RESULTS
from tests.support.fhir_rows import IDENTITY, lab_rows, request
from tests.support.medplum_fhir import FhirTenant

pytestmark = pytest.mark.integration

GLUCOSE = next(t for t in LAB_TESTS if t.code == "GLU")
# Medplum refuses a transaction holding conditional entries (ifNoneExist, PUT Type?...) when
# it has more than 8 entries: 4 rows and up to 4 Patient stubs stay within that.
BUNDLE_SIZE = 4


@pytest.fixture
def target(real_fhir: FhirTenant) -> Iterator[FhirTarget]:
    with FhirTarget(
        "fhir",
        real_fhir.base_url,
        LAB_RESULTS,
        IDENTITY,
        LAB_TARGET_COLUMNS,
        bundle_size=BUNDLE_SIZE,
        max_attempts=2,
        timeout_seconds=30.0,
        sleep=lambda _seconds: None,
    ) as opened:
        yield opened


def assert_balanced(result: LoadResult, sent: int) -> None:
    changed = result.rows_inserted + result.rows_updated + result.rows_unchanged
    assert changed + result.rows_rejected == sent
    assert result.rows_confirmed == sent - result.rows_rejected


def observation_keys(tenant: FhirTenant) -> Counter[str]:
    return Counter(r["identifier"][0]["value"] for r in tenant.resources("Observation"))


def test_first_load_then_forced_rerun(real_fhir: FhirTenant, target: FhirTarget) -> None:
    rows = lab_rows(30)
    patients = rows["patient_key"].n_unique()

    first = target.load(request(rows))

    assert (first.rows_inserted, first.rows_updated, first.rows_unchanged) == (rows.height, 0, 0)
    assert_balanced(first, rows.height)
    assert observation_keys(real_fhir) == Counter(rows["record_id"].to_list())
    assert len(real_fhir.resources("Patient")) == patients

    second = target.load(request(rows))

    assert second.rows_inserted == 0
    assert_balanced(second, rows.height)
    assert observation_keys(real_fhir) == Counter(rows["record_id"].to_list())
    assert len(real_fhir.resources("Patient")) == patients


def test_a_rerun_counts_unchanged_rows_and_writes_no_version(
    real_fhir: FhirTenant, target: FhirTarget
) -> None:
    rows = lab_rows(12)
    target.load(request(rows))
    before = real_fhir.versions("Observation")

    again = target.load(request(rows))

    assert (again.rows_inserted, again.rows_updated, again.rows_unchanged) == (0, 0, rows.height)
    assert real_fhir.versions("Observation") == before


def test_corrected_results_update_in_place(real_fhir: FhirTenant, target: FhirTarget) -> None:
    rows = lab_rows(20)
    target.load(request(rows))
    corrected = rows.with_columns(
        pl.when(pl.col(ROW_COLUMN) <= 5)
        .then(pl.lit("C"))
        .otherwise(pl.col("result_status"))
        .alias("result_status")
    )
    changed = set(corrected.filter(pl.col(ROW_COLUMN) <= 5)["record_id"].to_list())

    result = target.load(request(corrected))

    assert result.rows_inserted == 0
    assert (result.rows_updated, result.rows_unchanged) == (
        len(changed),
        rows.height - len(changed),
    )
    assert_balanced(result, rows.height)
    stored = {r["identifier"][0]["value"]: r for r in real_fhir.resources("Observation")}
    assert len(stored) == rows.height
    assert {key for key, r in stored.items() if r["status"] == "corrected"} >= changed


def test_a_code_the_server_refuses_is_a_rejected_row_with_its_issue_code(
    real_fhir: FhirTenant, target: FhirTarget
) -> None:
    rows = lab_rows(40, seed=5)
    refused = set(rows.filter(pl.col("loinc_code") == GLUCOSE.loinc_code)[ROW_COLUMN].to_list())
    assert 0 < len(refused) < rows.height
    real_fhir.reject_loinc([GLUCOSE.loinc_code])

    result = target.load(request(rows))

    assert {r.row for r in result.rejections} == refused
    # Medplum: 400 + `invariant` (its validator on the profile); home-made: 422 code-invalid.
    assert {r.reason for r in result.rejections} == {"http_400:invariant"}
    assert result.rows_inserted == rows.height - len(refused)
    assert_balanced(result, rows.height)
    assert sum(observation_keys(real_fhir).values()) == rows.height - len(refused)

    real_fhir.reject_loinc([])
    rerun = target.load(request(rows))
    assert (rerun.rows_inserted, rerun.rows_rejected) == (len(refused), 0)
    assert sum(observation_keys(real_fhir).values()) == rows.height


def test_observations_refer_to_patients_by_pseudonymous_identifier(
    real_fhir: FhirTenant, target: FhirTarget
) -> None:
    rows = lab_rows(16)
    key_of = dict(zip(rows["record_id"].to_list(), rows["patient_key"].to_list(), strict=True))
    target.load(request(rows))
    target.load(request(rows))  # a rerun must not make Patients twice or break references

    patients = real_fhir.resources("Patient")
    assert sorted(p["identifier"][0]["value"] for p in patients) == sorted(set(key_of.values()))
    assert all(set(p) <= {"resourceType", "id", "meta", "identifier"} for p in patients)
    by_id = {p["id"]: p["identifier"][0]["value"] for p in patients}
    for observation in real_fhir.resources("Observation"):
        subject = observation["subject"]
        kind, _, patient_id = subject["reference"].partition("/")
        assert kind == "Patient" and patient_id in by_id, subject["reference"]
        assert by_id[patient_id] == key_of[observation["identifier"][0]["value"]]
    key = next(iter(key_of.values()))
    chained = real_fhir.search(
        "Observation", **{"patient.identifier": f"{IDENTITY.patient_identifier_system}|{key}"}
    )
    assert len(chained) == sum(1 for k in key_of.values() if k == key)


def test_a_conditional_update_matching_two_resources_rejects_only_that_row(
    real_fhir: FhirTenant, target: FhirTarget
) -> None:
    rows = lab_rows(8)
    twice = str(rows["record_id"][0])
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": IDENTITY.identifier_system, "value": twice}],
        "status": "final",
        "code": {"text": "placed twice by another client"},
    }
    with httpx.Client() as client:
        for _ in range(2):
            client.post(f"{real_fhir.base_url}/Observation", json=resource).raise_for_status()

    result = target.load(request(rows))

    # Medplum inside a transaction: 400 `invalid` ("matched multiple resources");
    # a plain conditional PUT gets 412, and so does every entry on the home-made server.
    assert [(r.row, r.reason) for r in result.rejections] == [(1, "http_400:invalid")]
    assert result.rows_inserted == rows.height - 1
    assert_balanced(result, rows.height)


def test_the_health_probe_accepts_the_server(real_fhir: FhirTenant, target: FhirTarget) -> None:
    # Medplum refuses an empty transaction (400 invalid, "Missing bundle entries"), which
    # the probe once posted; it now holds one count-only search, and writes nothing.
    said = target.probe_health("acme_lab")

    assert "nothing written" in said and "canary" not in said
    assert real_fhir.resources("Patient") == [] and real_fhir.resources("Observation") == []
