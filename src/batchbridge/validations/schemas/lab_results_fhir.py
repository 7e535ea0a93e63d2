"""Transformed lab_results rows as FHIR R4 resources: one Observation per row, Patient stubs.

Pure functions, no I/O. Only the columns present in the frame are used: a FHIR target's
`columns` decide what it may receive (data minimization), and an absent optional column
just leaves its element out. Patients are referred to by the pseudonymous `patient_key`
only; names, birth dates, ZIP codes and MRNs never become part of a resource.

Choices:
- `Observation.subject` carries both a conditional reference
  (`Patient?identifier=<system>|<key>`), which a FHIR server resolves to the Patient
  stub sent in the same transaction, and the logical `identifier` itself.
- The partner's local test code is a second coding under `<identifier_system>/local-test-code`.
- A missing value is left out, never defaulted: an Observation without status, code or
  subject is then refused by the server and recorded as a rejected row.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any

import polars as pl

from batchbridge.errors import ConfigError
from batchbridge.validations.base import ROW_COLUMN, FhirIdentity, FhirResource

LOINC_SYSTEM = "http://loinc.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
LOCAL_CODE_SUFFIX = "/local-test-code"

RECORD_ID = "record_id"
REQUIRED_COLUMNS: tuple[str, ...] = (RECORD_ID, "patient_key", "loinc_code", "result_status")
"""Columns without which no valid Observation can be made: a target must receive them."""

STATUS: Mapping[str, str] = {"F": "final", "C": "corrected", "P": "preliminary"}
"""Spec result_status -> Observation.status."""

INTERPRETATION: Mapping[str, str] = {
    "N": "Normal",
    "L": "Low",
    "H": "High",
    "LL": "Critical low",
    "HH": "Critical high",
    "A": "Abnormal",
}
"""Spec abnormal_flag -> display of the same code in v3-ObservationInterpretation."""


def search_token(system: str, value: str) -> str:
    """`system|value` as a FHIR token search value: escaped, then percent-encoded for a URL."""
    escaped = "|".join(_escape(part) for part in (system, value))
    return urllib.parse.quote(escaped, safe=":/|\\")


def _escape(part: str) -> str:
    # FHIR search escaping: a literal \ , | or $ inside a value is preceded by a backslash.
    for char in ("\\", ",", "|", "$"):
        part = part.replace(char, f"\\{char}")
    return part


def patient_reference(identity: FhirIdentity, patient_key: str) -> dict[str, Any]:
    """Reference to the Patient whose identifier is `patient_key` (pseudonymous)."""
    token = search_token(identity.patient_identifier_system, patient_key)
    return {
        "reference": f"Patient?identifier={token}",
        "type": "Patient",
        "identifier": {"system": identity.patient_identifier_system, "value": patient_key},
    }


def patient_stub(identity: FhirIdentity, patient_key: str) -> FhirResource:
    """A Patient holding only the pseudonymous key, so Observations can refer to it."""
    resource = {
        "resourceType": "Patient",
        "identifier": [{"system": identity.patient_identifier_system, "value": patient_key}],
    }
    return FhirResource(
        row=None,
        resource=resource,
        identifier_system=identity.patient_identifier_system,
        identifier=patient_key,
    )


def _fhir_datetime(value: object, column: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            # FHIR needs an offset on a time; guessing one would invent data.
            raise ValueError(f"column {column!r} is a naive Datetime; convert it to UTC first")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def observation(row: Mapping[str, Any], identity: FhirIdentity) -> dict[str, Any]:
    """The Observation for one transformed row (a dict of column -> value)."""

    def get(column: str) -> Any:
        value = row.get(column)
        return None if isinstance(value, str) and not value.strip() else value

    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": identity.identifier_system, "value": str(row[RECORD_ID])}],
    }
    status = get("result_status")
    if status is not None:
        # Validation admits F/C/P only; anything else goes as it is, for the server to refuse.
        resource["status"] = STATUS.get(str(status).strip().upper(), str(status))
    resource["category"] = [
        {"coding": [{"system": CATEGORY_SYSTEM, "code": "laboratory", "display": "Laboratory"}]}
    ]
    codings: list[dict[str, str]] = []
    if get("loinc_code") is not None:
        loinc = {"system": LOINC_SYSTEM, "code": str(get("loinc_code"))}
        if get("loinc_display") is not None:
            loinc["display"] = str(get("loinc_display"))
        codings.append(loinc)
    if get("local_test_code") is not None:
        local = {
            "system": identity.identifier_system + LOCAL_CODE_SUFFIX,
            "code": str(get("local_test_code")),
        }
        if get("test_name") is not None:
            local["display"] = str(get("test_name"))
        codings.append(local)
    code: dict[str, Any] = {"coding": codings} if codings else {}
    text = get("test_name") if get("test_name") is not None else get("loinc_display")
    if text is not None:
        code["text"] = str(text)
    if code:
        resource["code"] = code
    if get("patient_key") is not None:
        resource["subject"] = patient_reference(identity, str(get("patient_key")))
    effective = _fhir_datetime(get("specimen_collected_at"), "specimen_collected_at")
    if effective is not None:
        resource["effectiveDateTime"] = effective
    issued = _fhir_datetime(get("resulted_at"), "resulted_at")
    if issued is not None:
        resource["issued"] = issued
    numeric = get("result_value_numeric")
    if numeric is not None:
        quantity: dict[str, Any] = {"value": float(numeric)}
        if get("result_unit") is not None:
            quantity["unit"] = str(get("result_unit"))
        resource["valueQuantity"] = quantity
    elif get("result_value") is not None:
        resource["valueString"] = str(get("result_value"))
    flag = get("abnormal_flag")
    if flag is not None:
        flag_code = str(flag).strip().upper()
        coding = {"system": INTERPRETATION_SYSTEM, "code": flag_code}
        if flag_code in INTERPRETATION:
            coding["display"] = INTERPRETATION[flag_code]
        resource["interpretation"] = [{"coding": [coding]}]
    if get("reference_range") is not None:
        resource["referenceRange"] = [{"text": str(get("reference_range"))}]
    return resource


def lab_fhir_resources(rows: pl.DataFrame, identity: FhirIdentity) -> Iterator[FhirResource]:
    """Patient stubs (one per distinct patient_key, row None) first, then one Observation a row.

    ConfigError when a column every Observation needs is not in the frame (the target's
    `columns` leave it out): that is a feed configuration problem, not a bad row.
    """
    missing = [column for column in (*REQUIRED_COLUMNS, ROW_COLUMN) if column not in rows.columns]
    if missing:
        raise ConfigError(f"lab_results as FHIR Observations needs the columns {missing}")
    keys = rows.get_column("patient_key").drop_nulls().unique(maintain_order=True)
    for key in keys.to_list():
        if str(key).strip():
            yield patient_stub(identity, str(key))
    for row in rows.iter_rows(named=True):
        yield FhirResource(
            row=int(row[ROW_COLUMN]),
            resource=observation(row, identity),
            identifier_system=identity.identifier_system,
            identifier=str(row[RECORD_ID]),
        )
