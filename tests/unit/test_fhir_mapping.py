"""lab_results rows as FHIR R4 Observations and Patient stubs (pure mapping, no server)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
import pytest

from batchbridge.demo.lab_data import generate_lab_rows, mapping_frame
from batchbridge.demo.scenario import LAB_TARGET_COLUMNS
from batchbridge.errors import ConfigError
from batchbridge.validations.base import (
    ROW_COLUMN,
    FhirIdentity,
    SupportsFhir,
    TransformContext,
    ValidationContext,
)
from batchbridge.validations.schemas.lab_results import LAB_RESULTS
from batchbridge.validations.schemas.lab_results_fhir import (
    INTERPRETATION_SYSTEM,
    LOINC_SYSTEM,
    lab_fhir_resources,
    search_token,
)

IDENTITY = FhirIdentity(
    identifier_system="urn:batchbridge:acme_lab:lab_results",
    patient_identifier_system="urn:batchbridge:patient-key",
)
COLLECTED = datetime(2026, 3, 1, 13, 5, 0, tzinfo=UTC)
RESULTED = datetime(2026, 3, 1, 15, 30, 0, tzinfo=UTC)


def rows(**overrides: list[Any]) -> pl.DataFrame:
    """Two transformed lab rows (one numeric, one qualitative) of one patient."""
    data: dict[str, list[Any]] = {
        "record_id": ["R1", "R2"],
        "patient_key": ["pk-1", "pk-1"],
        "loinc_code": ["2345-7", "5778-6"],
        "loinc_display": ["Glucose [Mass/volume] in Serum or Plasma", "Color of Urine"],
        "local_test_code": ["GLU", "UCOLOR"],
        "test_name": ["Glucose, fasting", "Urine color"],
        "result_value": ["105", "Yellow"],
        "result_value_numeric": [105.0, None],
        "result_unit": ["mg/dL", None],
        "reference_range": ["70-99", None],
        "abnormal_flag": ["H", None],
        "result_status": ["F", "C"],
        "specimen_collected_at": [COLLECTED, COLLECTED],
        "resulted_at": [RESULTED, RESULTED],
        ROW_COLUMN: [3, 7],
    }
    data.update(overrides)
    return pl.DataFrame(data).with_columns(pl.col(ROW_COLUMN).cast(pl.UInt32))


def test_a_numeric_row_becomes_a_full_observation() -> None:
    resources = list(lab_fhir_resources(rows(), IDENTITY))
    observation = resources[1].resource

    assert resources[1].row == 3
    assert resources[1].identifier == "R1"
    assert resources[1].identifier_system == IDENTITY.identifier_system
    assert observation["resourceType"] == "Observation"
    assert observation["identifier"] == [{"system": IDENTITY.identifier_system, "value": "R1"}]
    assert observation["status"] == "final"
    assert observation["category"][0]["coding"][0]["code"] == "laboratory"
    assert observation["code"] == {
        "coding": [
            {
                "system": LOINC_SYSTEM,
                "code": "2345-7",
                "display": "Glucose [Mass/volume] in Serum or Plasma",
            },
            {
                "system": "urn:batchbridge:acme_lab:lab_results/local-test-code",
                "code": "GLU",
                "display": "Glucose, fasting",
            },
        ],
        "text": "Glucose, fasting",
    }
    assert observation["subject"] == {
        "reference": "Patient?identifier=urn:batchbridge:patient-key|pk-1",
        "type": "Patient",
        "identifier": {"system": "urn:batchbridge:patient-key", "value": "pk-1"},
    }
    assert observation["effectiveDateTime"] == "2026-03-01T13:05:00+00:00"
    assert observation["issued"] == "2026-03-01T15:30:00+00:00"
    assert observation["valueQuantity"] == {"value": 105.0, "unit": "mg/dL"}
    assert "valueString" not in observation
    assert observation["interpretation"] == [
        {"coding": [{"system": INTERPRETATION_SYSTEM, "code": "H", "display": "High"}]}
    ]
    assert observation["referenceRange"] == [{"text": "70-99"}]


def test_a_qualitative_corrected_row_has_a_string_value_and_no_empty_elements() -> None:
    observation = list(lab_fhir_resources(rows(), IDENTITY))[2].resource

    assert observation["status"] == "corrected"
    assert observation["valueString"] == "Yellow"
    for absent in ("valueQuantity", "interpretation", "referenceRange"):
        assert absent not in observation


@pytest.mark.parametrize(
    ("flag", "status"), [("F", "final"), ("C", "corrected"), ("P", "preliminary")]
)
def test_result_status_maps_per_spec(flag: str, status: str) -> None:
    frame = rows(result_status=[flag, flag])
    assert list(lab_fhir_resources(frame, IDENTITY))[1].resource["status"] == status


def test_one_patient_stub_per_patient_first_holding_only_the_pseudonymous_key() -> None:
    frame = rows(patient_key=["pk-1", "pk-2"]).vstack(
        rows(record_id=["R3", "R4"], patient_key=["pk-2", None], **{ROW_COLUMN: [8, 9]})
    )
    resources = list(lab_fhir_resources(frame, IDENTITY))

    stubs = [r for r in resources if r.row is None]
    assert resources[: len(stubs)] == stubs
    assert [s.identifier for s in stubs] == ["pk-1", "pk-2"]
    assert stubs[0].resource == {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:batchbridge:patient-key", "value": "pk-1"}],
    }
    assert [r.row for r in resources if r.row is not None] == [3, 7, 8, 9]
    assert "subject" not in resources[-1].resource  # no key: no invented reference


def test_only_columns_in_the_frame_are_used() -> None:
    frame = rows().drop("reference_range", "abnormal_flag", "test_name", "local_test_code")
    observation = list(lab_fhir_resources(frame, IDENTITY))[1].resource

    assert observation["code"]["text"] == "Glucose [Mass/volume] in Serum or Plasma"
    assert [c["system"] for c in observation["code"]["coding"]] == [LOINC_SYSTEM]
    assert "referenceRange" not in observation
    assert "interpretation" not in observation


def test_a_missing_required_column_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="loinc_code"):
        list(lab_fhir_resources(rows().drop("loinc_code"), IDENTITY))


def test_a_naive_datetime_is_refused_rather_than_given_an_offset() -> None:
    naive = [datetime(2026, 3, 1, 8, 0), datetime(2026, 3, 1, 8, 0)]
    with pytest.raises(ValueError, match="resulted_at"):
        list(lab_fhir_resources(rows(resulted_at=naive), IDENTITY))


def test_search_tokens_escape_separators_and_encode_for_urls() -> None:
    assert search_token("urn:x", "a|b,c") == "urn:x|a\\|b\\%2Cc"
    assert search_token("urn:x", "a b&c") == "urn:x|a%20b%26c"


def test_the_lab_schema_supports_fhir_and_never_sends_identifying_columns() -> None:
    assert isinstance(LAB_RESULTS, SupportsFhir)
    canary = "Zebediah-Canary"
    file_date = date(2026, 3, 1)
    raw = generate_lab_rows(40, seed=7, file_date=file_date, canary_names=[canary])
    raw = raw.with_columns(pl.int_range(1, raw.height + 1, dtype=pl.UInt32).alias(ROW_COLUMN))
    mappings = {"local_test_code": mapping_frame()}
    valid = LAB_RESULTS.validate(
        raw, ValidationContext("acme", file_date, "America/Chicago", mappings)
    ).valid
    transformed = LAB_RESULTS.transform(
        valid, TransformContext("acme", "America/Chicago", mappings, b"k" * 32)
    )
    # Even handed every output column (names, birth date, ZIP, NPI), none is used.
    resources = list(LAB_RESULTS.fhir_resources(transformed, IDENTITY))

    observations = [r for r in resources if r.row is not None]
    assert len(observations) == transformed.height
    text = json.dumps([r.resource for r in resources])
    assert canary not in text
    for column in ("patient_dob", "patient_zip", "ordering_provider_npi"):
        for value in transformed[column].cast(pl.String).to_list()[:5]:
            assert value not in text
    assert set(LAB_TARGET_COLUMNS) >= {"patient_key", "loinc_code", "result_status"}
