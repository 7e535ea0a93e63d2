"""The patient_roster schema: spec rules, one reason per planted problem, transform."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from batchbridge.config import FormatConfig, HeaderRecordConfig
from batchbridge.validations.base import (
    REASONS_COLUMN,
    ROW_COLUMN,
    FhirIdentity,
    SupportsFhir,
    TransformContext,
    ValidationContext,
)
from batchbridge.validations.readers.delimited import read_delimited
from batchbridge.validations.registry import get_schema
from batchbridge.validations.schemas.patient_roster import OUTPUT_COLUMNS, SCHEMA
from tests.support.roster_data import (
    BAD_ROW_REASONS,
    generate_roster_rows,
    plan_table,
    render_roster,
)

FILE_DATE = date(2026, 11, 20)
FMT = FormatConfig(
    delimiter="|",
    quoting="none",
    encoding="latin-1",
    trailer_prefix=None,
    trim_trailing_whitespace=True,
    header_record=HeaderRecordConfig(expected_sender="RIVERSIDE"),
)
VCTX = ValidationContext(
    tenant="riverside", file_date=FILE_DATE, timezone="UTC", mappings={"plan_code": plan_table()}
)
TCTX = TransformContext(
    tenant="riverside", timezone="UTC", mappings={"plan_code": plan_table()}, pseudonym_key=b"k"
)


def parse(frame: pl.DataFrame) -> pl.DataFrame:
    return read_delimited(render_roster(frame, file_date=FILE_DATE), FMT, SCHEMA.columns).frame


def test_registered_by_module_name() -> None:
    assert get_schema("patient_roster") is SCHEMA
    assert isinstance(SCHEMA, SupportsFhir)


def test_valid_roster_passes_and_transforms() -> None:
    frame = parse(generate_roster_rows(50, seed=3, file_date=FILE_DATE, canary_names=["Zyxwa"]))
    result = SCHEMA.validate(frame, VCTX)
    assert result.quarantined.height == 0
    out = SCHEMA.transform(result.valid, TCTX)
    assert out.columns == ["member_id", *OUTPUT_COLUMNS, ROW_COLUMN]
    assert out["birth_date"].dtype == pl.Date
    assert out["plan_name"].null_count() == 0
    assert set(out["gender"].unique()) <= {"male", "female", "other", "unknown"}
    phones = out["phone"].drop_nulls()
    assert phones.str.contains(r"^[0-9]{10}$").all()
    assert out["given"].str.ends_with(" ").sum() == 0


@pytest.mark.parametrize("kind", sorted(BAD_ROW_REASONS))
def test_each_planted_problem_gets_exactly_its_reason(kind: str) -> None:
    frame = parse(generate_roster_rows(12, seed=5, file_date=FILE_DATE, bad_rows={kind: 1}))
    result = SCHEMA.validate(frame, VCTX)
    assert result.quarantined.height == 1
    assert tuple(result.quarantined[REASONS_COLUMN][0]) == BAD_ROW_REASONS[kind]
    assert result.valid.height == 11


def test_duplicate_member_ids_quarantine_both_rows() -> None:
    rows = generate_roster_rows(4, seed=1, file_date=FILE_DATE, member_ids=["M1", "M2", "M2", "M3"])
    result = SCHEMA.validate(parse(rows), VCTX)
    assert result.quarantined[ROW_COLUMN].to_list() == [2, 3]
    assert all(list(r) == ["member_id:unique"] for r in result.quarantined[REASONS_COLUMN])


def test_members_become_fhir_patients_by_member_id() -> None:
    frame = parse(generate_roster_rows(3, seed=2, file_date=FILE_DATE))
    out = SCHEMA.transform(SCHEMA.validate(frame, VCTX).valid, TCTX)
    identity = FhirIdentity("urn:test:members", "urn:test:patient-key")
    resources = list(SCHEMA.fhir_resources(out, identity))
    assert [r.identifier for r in resources] == out["member_id"].to_list()
    patient = resources[0].resource
    assert patient["resourceType"] == "Patient"
    assert patient["identifier"][0] == {"system": "urn:test:members", "value": "M000001"}
    assert patient["birthDate"].count("-") == 2
