"""lab_results schema: each rule quarantines with its reason; the transform's shape and values."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
import pytest
from pandera.config import ValidationDepth, config_context

from batchbridge.demo.lab_data import (
    expected_quarantined,
    generate_lab_rows,
    mapping_frame,
)
from batchbridge.errors import ConfigError, SchemaDriftError
from batchbridge.validations.base import (
    REASONS_COLUMN,
    ROW_COLUMN,
    FeedSchema,
    TransformContext,
    ValidationContext,
    ValidationResult,
)
from batchbridge.validations.registry import get_schema, known_schemas
from batchbridge.validations.schemas.lab_results import (
    COLUMNS,
    LAB_RESULTS,
    OUTPUT_COLUMNS,
    pseudonymize,
    reason_names,
)
from tests.support.lab_expectations import BAD_ROW_REASONS

FILE_DATE = date(2024, 11, 4)
TZ = "America/Chicago"
KEY = b"k" * 32
CTX = ValidationContext(
    tenant="acme_lab",
    file_date=FILE_DATE,
    timezone=TZ,
    mappings={"local_test_code": mapping_frame()},
)
TCTX = TransformContext(
    tenant="acme_lab", timezone=TZ, mappings={"local_test_code": mapping_frame()}, pseudonym_key=KEY
)

GOOD_ROW: dict[str, str] = {
    "record_id": "R1",
    "patient_mrn": "ABC1234567",
    "patient_first_name": "Ann",
    "patient_last_name": "Lee",
    "patient_dob": "1980-05-17",
    "patient_sex": "f",
    "patient_zip": "02134",
    "ordering_provider_npi": "1234567893",
    "specimen_collected_at": "2024-11-03T08:00:00",
    "resulted_at": "2024-11-03T10:30:00-06:00",
    "local_test_code": "GLU",
    "test_name": "Glucose, fasting",
    "result_value": "95",
    "result_unit": "mg/dL",
    "reference_range": "70-99",
    "abnormal_flag": "N",
    "result_status": "F",
}


def frame_of(*changes: dict[str, Any]) -> pl.DataFrame:
    """One row per `changes` dict: GOOD_ROW with those fields replaced, ids R1, R2…."""
    records = [{**GOOD_ROW, "record_id": f"R{i}", **change} for i, change in enumerate(changes, 1)]
    return pl.DataFrame(records, schema=dict.fromkeys(COLUMNS, pl.String)).with_columns(
        pl.int_range(1, len(records) + 1, dtype=pl.UInt32).alias(ROW_COLUMN)
    )


def reasons_of(result: ValidationResult) -> dict[int, list[str]]:
    return {
        row: reasons
        for row, reasons in result.quarantined.select(ROW_COLUMN, REASONS_COLUMN).iter_rows()
    }


def single_reasons(change: dict[str, Any], ctx: ValidationContext = CTX) -> list[str]:
    result = LAB_RESULTS.validate(frame_of(change), ctx)
    return reasons_of(result).get(1, [])


def test_a_good_row_is_valid() -> None:
    result = LAB_RESULTS.validate(frame_of({}), CTX)
    assert result.valid.height == 1
    assert result.quarantined.height == 0
    assert result.quarantined.schema[REASONS_COLUMN] == pl.List(pl.String)


@pytest.mark.parametrize(
    ("change", "reasons"),
    [
        ({"record_id": "  "}, ["record_id:required"]),
        ({"patient_mrn": "abc-123"}, ["patient_mrn:pattern"]),
        ({"patient_mrn": "ABC12"}, ["patient_mrn:pattern"]),
        ({"patient_mrn": " ABC123 "}, []),
        ({"patient_first_name": ""}, ["patient_first_name:required"]),
        ({"patient_last_name": None}, ["patient_last_name:required"]),
        ({"patient_dob": ""}, ["patient_dob:required"]),
        ({"patient_dob": "1980-02-30"}, ["patient_dob:iso_date"]),
        ({"patient_dob": "05/17/1980"}, ["patient_dob:iso_date"]),
        ({"patient_dob": "2024-11-05"}, ["patient_dob:date_in_range"]),
        ({"patient_dob": "1899-12-31"}, ["patient_dob:date_in_range"]),
        ({"patient_dob": "2024-11-04"}, []),
        ({"patient_dob": "1900-01-01"}, []),
        ({"patient_sex": "X"}, ["patient_sex:one_of"]),
        ({"patient_sex": ""}, ["patient_sex:required"]),
        ({"patient_sex": " u "}, []),
        ({"patient_zip": "0213"}, ["patient_zip:pattern"]),
        ({"patient_zip": "02134-0001"}, []),
        ({"ordering_provider_npi": "1234567890"}, ["ordering_provider_npi:npi_luhn"]),
        ({"ordering_provider_npi": "123456789"}, ["ordering_provider_npi:npi_luhn"]),
        ({"specimen_collected_at": ""}, ["specimen_collected_at:required"]),
        ({"specimen_collected_at": "2024-11-03"}, ["specimen_collected_at:iso_datetime"]),
        ({"resulted_at": "yesterday"}, ["resulted_at:iso_datetime"]),
        (
            {"specimen_collected_at": "2024-11-03T11:00:00"},  # 17:00Z, after 16:30Z
            ["specimen_collected_at:not_after_resulted_at"],
        ),
        (
            {"specimen_collected_at": "2024-03-10T02:30:00", "resulted_at": "2024-03-10T09:00Z"},
            ["specimen_collected_at:local_time_exists"],
        ),
        (
            {"specimen_collected_at": "2024-11-03T01:30:00"},
            ["specimen_collected_at:local_time_unambiguous"],
        ),
        ({"local_test_code": "NOPE"}, ["local_test_code:unmapped_code"]),
        ({"local_test_code": ""}, ["local_test_code:required"]),
        ({"test_name": " "}, ["test_name:required"]),
        ({"result_value": ""}, ["result_value:required"]),
        ({"result_value": "<5"}, ["result_value:numeric_for_quantitative"]),
        ({"result_value": "95", "result_unit": ""}, ["result_unit:required_when_numeric"]),
        (
            {"result_value": "see note", "result_unit": ""},
            ["result_value:numeric_for_quantitative"],
        ),
        (
            {"local_test_code": "FLU-A", "result_value": "Negative", "result_unit": ""},
            [],
        ),
        (
            {"local_test_code": "FLU-A", "result_value": "1", "result_unit": ""},
            ["result_unit:required_when_numeric"],
        ),
        ({"reference_range": ""}, []),
        ({"abnormal_flag": ""}, []),
        ({"abnormal_flag": "HH"}, []),
        ({"abnormal_flag": "X"}, ["abnormal_flag:one_of"]),
        ({"result_status": "f"}, ["result_status:one_of"]),
        ({"result_status": "C"}, []),
    ],
)
def test_each_rule_gives_its_reason(change: dict[str, Any], reasons: list[str]) -> None:
    assert single_reasons(change) == reasons


def test_every_reason_is_column_colon_rule_and_known() -> None:
    known = set(reason_names(CTX))
    for reason in known:
        column, rule = reason.split(":")
        assert column in COLUMNS
        assert re.fullmatch(r"[a-z_]+", rule)
    assert set().union(*BAD_ROW_REASONS.values()) <= known


def test_a_row_gets_all_its_reasons_in_column_order() -> None:
    change = {
        "ordering_provider_npi": "1234567890",
        "patient_sex": "X",
        "patient_last_name": "",
        "local_test_code": "NOPE",
        "result_unit": "",
    }
    assert single_reasons(change) == [
        "patient_last_name:required",
        "patient_sex:one_of",
        "ordering_provider_npi:npi_luhn",
        "local_test_code:unmapped_code",
        "result_unit:required_when_numeric",
    ]


def test_every_row_of_a_duplicated_id_is_quarantined() -> None:
    frame = frame_of({"record_id": "A"}, {"record_id": "B"}, {"record_id": "A "}, {})
    result = LAB_RESULTS.validate(frame, CTX)
    assert reasons_of(result) == {1: ["record_id:unique"], 3: ["record_id:unique"]}
    assert result.valid[ROW_COLUMN].to_list() == [2, 4]


@pytest.mark.parametrize("kind", sorted(BAD_ROW_REASONS))
def test_generated_bad_rows_get_exactly_their_reasons(kind: str) -> None:
    frame = generate_lab_rows(80, seed=2, file_date=FILE_DATE, bad_rows={kind: 3})
    parsed = frame.with_columns(pl.int_range(1, 81, dtype=pl.UInt32).alias(ROW_COLUMN))
    result = LAB_RESULTS.validate(parsed, CTX)
    assert result.quarantined.height == expected_quarantined({kind: 3})
    assert result.valid.height + result.quarantined.height == parsed.height
    for reasons in result.quarantined[REASONS_COLUMN].to_list():
        assert reasons == list(BAD_ROW_REASONS[kind])


def test_split_keeps_every_row_once_with_its_columns() -> None:
    bad = {"bad_npi": 4, "duplicate_id": 2, "missing_last_name": 3}
    frame = generate_lab_rows(200, seed=9, file_date=FILE_DATE, bad_rows=bad)
    parsed = frame.with_columns(pl.int_range(1, 201, dtype=pl.UInt32).alias(ROW_COLUMN))
    result = LAB_RESULTS.validate(parsed, CTX)
    assert result.valid.columns == parsed.columns
    assert result.quarantined.columns == [*parsed.columns, REASONS_COLUMN]
    rows = sorted(result.valid[ROW_COLUMN].to_list() + result.quarantined[ROW_COLUMN].to_list())
    assert rows == list(range(1, 201))
    assert result.quarantined.height == expected_quarantined(bad)
    # Quarantined rows are kept exactly as read: nothing trimmed, filled or defaulted.
    original = parsed.join(result.quarantined.select(ROW_COLUMN), on=ROW_COLUMN)
    assert (
        result.quarantined.drop(REASONS_COLUMN).sort(ROW_COLUMN).equals(original.sort(ROW_COLUMN))
    )


def test_rules_run_even_when_pandera_is_told_to_skip_data_checks() -> None:
    frame = frame_of({"ordering_provider_npi": "1234567890"})
    for settings in (
        {"validation_depth": ValidationDepth.SCHEMA_ONLY},
        {"validation_enabled": False},
    ):
        with config_context(**settings):  # type: ignore[arg-type]
            result = LAB_RESULTS.validate(frame, CTX)
        assert reasons_of(result) == {1: ["ordering_provider_npi:npi_luhn"]}


def test_contract_violation_fails_whole_without_values() -> None:
    frame = frame_of({"patient_last_name": "Zebulon"}).drop("patient_zip")
    with pytest.raises(SchemaDriftError) as caught:
        LAB_RESULTS.validate(frame, CTX)
    assert "Zebulon" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_missing_mapping_is_a_config_error() -> None:
    ctx = ValidationContext(tenant="t", file_date=FILE_DATE, timezone=TZ, mappings={})
    with pytest.raises(ConfigError, match="local_test_code"):
        LAB_RESULTS.validate(frame_of({}), ctx)


def test_zero_rows() -> None:
    result = LAB_RESULTS.validate(frame_of({}).clear(), CTX)
    assert result.valid.height == 0 and result.quarantined.height == 0
    assert LAB_RESULTS.transform(result.valid, TCTX).columns == [
        "record_id",
        *OUTPUT_COLUMNS,
        ROW_COLUMN,
    ]


# --- transform ---------------------------------------------------------------------------


def transformed(*changes: dict[str, Any]) -> pl.DataFrame:
    result = LAB_RESULTS.validate(frame_of(*changes), CTX)
    assert result.quarantined.height == 0, reasons_of(result)
    return LAB_RESULTS.transform(result.valid, TCTX)


def test_output_shape() -> None:
    out = transformed({})
    assert out.columns == [*LAB_RESULTS.natural_key, *LAB_RESULTS.output_columns, ROW_COLUMN]
    assert "patient_mrn" not in out.columns
    assert out.schema["specimen_collected_at"] == pl.Datetime("us", "UTC")
    assert out.schema["resulted_at"] == pl.Datetime("us", "UTC")
    assert out.schema["result_value_numeric"] == pl.Float64
    assert out.schema["patient_dob"] == pl.Date


def test_timestamps_to_utc_across_dst_in_chicago() -> None:
    times = [
        ("2024-03-09T12:00:00", datetime(2024, 3, 9, 18, tzinfo=UTC)),  # CST, UTC-6
        ("2024-03-10T01:59:59", datetime(2024, 3, 10, 7, 59, 59, tzinfo=UTC)),  # last CST second
        ("2024-03-10T03:00:00", datetime(2024, 3, 10, 8, tzinfo=UTC)),  # first CDT minute
        ("2024-03-11T12:00:00", datetime(2024, 3, 11, 17, tzinfo=UTC)),  # CDT, UTC-5
        ("2024-11-03T00:59:00", datetime(2024, 11, 3, 5, 59, tzinfo=UTC)),  # still CDT
        ("2024-11-03T02:00:00", datetime(2024, 11, 3, 8, tzinfo=UTC)),  # CST again
        ("2024-11-03T01:30:00-05:00", datetime(2024, 11, 3, 6, 30, tzinfo=UTC)),
        ("2024-11-03T01:30:00-06:00", datetime(2024, 11, 3, 7, 30, tzinfo=UTC)),
        ("2024-07-01T12:00:00+02:00", datetime(2024, 7, 1, 10, tzinfo=UTC)),
        ("2024-07-01T12:00:00Z", datetime(2024, 7, 1, 12, tzinfo=UTC)),
    ]
    out = transformed(
        *(
            {"specimen_collected_at": text, "resulted_at": "2024-12-01T00:00:00Z"}
            for text, _ in times
        )
    )
    assert out["specimen_collected_at"].to_list() == [expected for _, expected in times]


def test_patient_key_is_keyed_hmac_of_tenant_and_trimmed_mrn() -> None:
    out = transformed(
        {"patient_mrn": " ABC123 "}, {"patient_mrn": "ABC123"}, {"patient_mrn": "XYZ999"}
    )
    keys = out["patient_key"].to_list()
    expected = hmac.new(KEY, b"acme_lab|ABC123", hashlib.sha256).hexdigest()
    assert keys[0] == keys[1] == expected
    assert keys[2] != expected
    assert re.fullmatch(r"[0-9a-f]{64}", keys[2])


def test_patient_key_depends_on_key_and_tenant_and_is_deterministic() -> None:
    mrns = pl.Series(["ABC123", "ABC123", None])
    first = pseudonymize(mrns, tenant="acme_lab", key=KEY).to_list()
    assert first == pseudonymize(mrns, tenant="acme_lab", key=KEY).to_list()
    assert first[2] is None
    assert pseudonymize(mrns, tenant="acme_lab", key=b"other" * 8).to_list()[0] != first[0]
    assert pseudonymize(mrns, tenant="beta_lab", key=KEY).to_list()[0] != first[0]
    with pytest.raises(ConfigError):
        pseudonymize(mrns, tenant="acme_lab", key=b"")


def test_loinc_mapping_and_numeric_values() -> None:
    out = transformed(
        {"local_test_code": " GLU ", "result_value": " 101.5 "},
        {"local_test_code": "FLU-A", "result_value": "Negative", "result_unit": ""},
        {"local_test_code": "CO2", "result_value": "24", "result_unit": "mmol/L"},
    )
    assert out["loinc_code"].to_list() == ["2345-7", "80382-5", "2028-9"]
    assert out["loinc_display"].to_list()[2] == (
        "Carbon dioxide, total [Moles/volume] in Serum or Plasma"
    )
    assert out["local_test_code"].to_list() == ["GLU", "FLU-A", "CO2"]
    assert out["result_value"].to_list() == ["101.5", "Negative", "24"]
    assert out["result_value_numeric"].to_list() == [101.5, None, 24.0]
    assert out["result_unit"].to_list() == ["mg/dL", None, "mmol/L"]


def test_normalisation_without_invention() -> None:
    out = transformed(
        {"patient_sex": " f ", "reference_range": "", "abnormal_flag": ""},
        {"patient_sex": "U", "reference_range": "M: 13.5-17.5\nF: 12.0-15.5"},
    )
    assert out["patient_sex"].to_list() == ["F", "U"]
    assert out["reference_range"].to_list() == [None, "M: 13.5-17.5\nF: 12.0-15.5"]
    assert out["abnormal_flag"].to_list() == [None, "N"]
    assert out["patient_dob"].to_list() == [date(1980, 5, 17)] * 2
    assert out["patient_zip"].to_list() == ["02134"] * 2
    assert out[ROW_COLUMN].to_list() == [1, 2]


def test_generated_file_transforms_without_nulls_in_required_outputs() -> None:
    frame = generate_lab_rows(500, seed=4, file_date=FILE_DATE)
    parsed = frame.with_columns(pl.int_range(1, 501, dtype=pl.UInt32).alias(ROW_COLUMN))
    result = LAB_RESULTS.validate(parsed, CTX)
    assert result.quarantined.height == 0
    out = LAB_RESULTS.transform(result.valid, TCTX)
    required = [
        c
        for c in out.columns
        if c not in {"result_value_numeric", "result_unit", "reference_range", "abnormal_flag"}
    ]
    assert out.select(required).null_count().sum_horizontal().item() == 0


# --- registry ----------------------------------------------------------------------------


def test_registry() -> None:
    schema: FeedSchema = get_schema("lab_results")
    assert schema is LAB_RESULTS
    assert "lab_results" in known_schemas()
    assert LAB_RESULTS.natural_key == ("record_id",)
    assert LAB_RESULTS.required_mappings == ("local_test_code",)
    with pytest.raises(ConfigError, match=r"known schemas: .*lab_results"):
        get_schema("lab_resutls")
