"""Synthetic lab files: deterministic, valid unless planted otherwise, and real RFC 4180."""

from __future__ import annotations

import csv
import io
import re
from datetime import date

import polars as pl
import pytest

from batchbridge.config import FormatConfig
from batchbridge.demo.lab_data import (
    LAB_COLUMNS,
    expected_quarantined,
    generate_lab_rows,
    mapping_frame,
    render_lab_csv,
)
from batchbridge.validations.base import REASONS_COLUMN, ROW_COLUMN, ValidationContext
from batchbridge.validations.checks import npi_digits_valid
from batchbridge.validations.readers.delimited import read_delimited
from batchbridge.validations.schemas.lab_results import LAB_RESULTS
from tests.support.lab_expectations import BAD_ROW_REASONS

FILE_DATE = date(2024, 3, 11)  # the day after Chicago springs forward
CTX = ValidationContext(
    tenant="acme_lab",
    file_date=FILE_DATE,
    timezone="America/Chicago",
    mappings={"local_test_code": mapping_frame()},
)


def validate(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    parsed = read_delimited(render_lab_csv(frame), FormatConfig(), LAB_COLUMNS)
    result = LAB_RESULTS.validate(parsed.frame, CTX)
    return result.valid, result.quarantined


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    first = generate_lab_rows(200, seed=1, file_date=FILE_DATE, bad_rows={"bad_npi": 2})
    assert first.equals(
        generate_lab_rows(200, seed=1, file_date=FILE_DATE, bad_rows={"bad_npi": 2})
    )
    assert not first.equals(generate_lab_rows(200, seed=2, file_date=FILE_DATE))


def test_shape_and_formats() -> None:
    frame = generate_lab_rows(1000, seed=3, file_date=FILE_DATE)
    assert frame.columns == list(LAB_COLUMNS)
    assert all(dtype == pl.String for dtype in frame.dtypes)
    assert frame["record_id"].is_unique().all()
    assert frame["record_id"].str.contains(r"^R[0-9]{9}$").all()
    assert frame["patient_mrn"].str.contains(r"^[A-Z0-9]{6,12}$").all()
    assert frame.select(npi_digits_valid("ordering_provider_npi").all()).item()
    assert frame["patient_zip"].str.starts_with("0").any()  # leading zeros to preserve
    # Patients repeat, and their attributes repeat with the MRN.
    per_patient = frame.group_by("patient_mrn").agg(pl.col("patient_dob").n_unique())
    assert per_patient.height < frame.height
    assert per_patient["patient_dob"].max() == 1


def test_generated_rows_are_all_valid() -> None:
    valid, quarantined = validate(generate_lab_rows(2000, seed=5, file_date=FILE_DATE))
    assert quarantined.height == 0, quarantined[REASONS_COLUMN].explode().value_counts()
    assert valid.height == 2000


def test_bad_rows_are_planted_as_asked() -> None:
    bad = dict.fromkeys(BAD_ROW_REASONS, 2)
    valid, quarantined = validate(generate_lab_rows(300, seed=6, file_date=FILE_DATE, bad_rows=bad))
    assert quarantined.height == expected_quarantined(bad) == 2 * len(bad) + 2
    counts = dict(quarantined[REASONS_COLUMN].explode().value_counts().iter_rows())
    for kind, reasons in BAD_ROW_REASONS.items():
        for reason in reasons:
            assert counts[reason] == (4 if kind == "duplicate_id" else 2)
    assert valid.height == 300 - quarantined.height


def test_bad_rows_argument_errors() -> None:
    with pytest.raises(ValueError, match="unknown bad_rows kinds"):
        generate_lab_rows(10, seed=1, file_date=FILE_DATE, bad_rows={"typo": 1})
    with pytest.raises(ValueError, match="too few"):
        generate_lab_rows(3, seed=1, file_date=FILE_DATE, bad_rows={"bad_npi": 4})


def test_canaries_are_planted_in_valid_and_quarantined_rows() -> None:
    canaries = ["Qzxcanary", "Vwycanary"]
    frame = generate_lab_rows(
        100, seed=8, file_date=FILE_DATE, bad_rows={"bad_sex": 3}, canary_names=canaries
    )
    valid, quarantined = validate(frame)
    for name in canaries:
        assert (valid["patient_first_name"] == name).sum() == 1
        assert (valid["patient_last_name"] == name).sum() == 1
        assert (quarantined["patient_first_name"] == name).sum() == 1


def test_render_is_rfc4180_with_trailer_crlf_and_bom() -> None:
    frame = generate_lab_rows(400, seed=9, file_date=FILE_DATE)
    data = render_lab_csv(frame, crlf=True, bom=True)
    assert data.startswith(b"\xef\xbb\xbfrecord_id,")
    assert data.endswith(b"\r\nTRAILER,400\r\n")
    # The content exercises quoting: commas, doubled quotes and embedded newlines.
    assert b'"Glucose, fasting"' in data
    assert b'""HbA1c""' in data
    assert re.search(rb'"M: 13\.5-17\.5\nF: 12\.0-15\.5"', data)
    # Python's csv module, an independent RFC 4180 reader, reads back the same rows.
    text = data.decode("utf-8-sig")
    records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    assert records[0] == list(LAB_COLUMNS)
    assert records[-1] == ["TRAILER", "400"]
    assert [tuple(r) for r in records[1:-1]] == frame.rows()


def test_render_without_trailer() -> None:
    frame = generate_lab_rows(5, seed=9, file_date=FILE_DATE)
    data = render_lab_csv(frame, trailer=False)
    assert b"TRAILER" not in data
    parsed = read_delimited(data, FormatConfig(), LAB_COLUMNS)
    assert parsed.declared_count is None
    assert parsed.frame.drop(ROW_COLUMN).equals(frame)


def test_zero_rows() -> None:
    frame = generate_lab_rows(0, seed=1, file_date=FILE_DATE)
    assert frame.height == 0
    assert render_lab_csv(frame).endswith(b"\nTRAILER,0\n")
