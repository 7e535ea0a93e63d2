"""Reusable row rules: each one on its own, as plain polars, plus the pandera adapter."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime

import pandera.polars as pa
import polars as pl
import pytest
from pandera.errors import SchemaErrors

from batchbridge.validations import checks

CHICAGO = "America/Chicago"


def run(expr: pl.Expr, values: Sequence[str | None], name: str = "v") -> list[object]:
    return pl.DataFrame({name: values}, schema={name: pl.String}).select(expr).to_series().to_list()


def luhn_reference(npi: str) -> bool:
    """Textbook Luhn over '80840' + the NPI, written independently of the polars version."""
    if len(npi) != 10 or not npi.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed("80840" + npi)):
        digit = int(char)
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def test_npi_known_valid_and_invalid() -> None:
    values = ["1234567893", "1234567890", " 1234567893 ", "123456789", "12345678931", "12345678a3"]
    assert run(checks.npi_digits_valid("v"), values) == [True, False, True, False, False, False]


def test_npi_matches_reference_luhn_on_many_numbers() -> None:
    rng = random.Random(5)
    values = [f"{rng.randrange(10**10):010d}" for _ in range(3000)]
    expected = [luhn_reference(v) for v in values]
    assert run(checks.npi_digits_valid("v"), values) == expected
    assert any(expected)  # the sample holds valid ones too (about 1 in 10)


def test_missing_values_pass_format_rules_but_fail_required() -> None:
    values: list[str | None] = [None, "", "   "]
    assert run(checks.required("v"), values) == [False, False, False]
    for rule in (
        checks.npi_luhn("v"),
        checks.iso_date("v"),
        checks.iso_datetime("v"),
        checks.numeric("v"),
        checks.matches("v", r"^[0-9]+$"),
        checks.one_of("v", ["A"]),
        checks.unique("v"),
    ):
        assert run(rule, values) == [True, True, True]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2024-02-29", True),
        ("2023-02-29", False),
        ("2024-13-01", False),
        ("2024-04-31", False),
        ("2024-1-01", False),
        ("20240101", False),
        (" 2024-01-01 ", True),
        ("2024-01-01T00:00", False),
    ],
)
def test_iso_date_is_real_calendar_date(value: str, ok: bool) -> None:
    assert run(checks.iso_date("v"), [value]) == [ok]


def test_date_in_range_is_inclusive_and_ignores_non_dates() -> None:
    rule = checks.date_in_range("v", date(1900, 1, 1), date(2024, 11, 4))
    values = ["1900-01-01", "1899-12-31", "2024-11-04", "2024-11-05", "not a date", None]
    assert run(rule, values) == [True, False, True, False, True, True]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-07-01T12:00:00Z", datetime(2024, 7, 1, 12, tzinfo=UTC)),
        ("2024-07-01T12:00:00+05:30", datetime(2024, 7, 1, 6, 30, tzinfo=UTC)),
        ("2024-07-01T12:00:00-0600", datetime(2024, 7, 1, 18, tzinfo=UTC)),
        ("2024-07-01T12:00:00+02", datetime(2024, 7, 1, 10, tzinfo=UTC)),
        ("2024-07-01T12:00:00.25Z", datetime(2024, 7, 1, 12, 0, 0, 250000, tzinfo=UTC)),
        ("2024-07-01T12:00:00,123456789Z", datetime(2024, 7, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2024-07-01 12:00Z", datetime(2024, 7, 1, 12, tzinfo=UTC)),
        # Naive: wall-clock time in Chicago (CDT, UTC-5 in July; CST, UTC-6 in January).
        ("2024-07-01T12:00:00", datetime(2024, 7, 1, 17, tzinfo=UTC)),
        ("2024-01-15T12:00:00", datetime(2024, 1, 15, 18, tzinfo=UTC)),
    ],
)
def test_parse_iso_datetime_to_utc(value: str, expected: datetime) -> None:
    frame = pl.DataFrame({"v": [value]}).select(checks.parse_iso_datetime("v", CHICAGO).alias("v"))
    assert frame.schema["v"] == pl.Datetime("us", "UTC")
    assert frame.item() == expected
    assert run(checks.iso_datetime("v"), [value]) == [True]


@pytest.mark.parametrize(
    "value",
    [
        "2024-07-01",
        "2024-07-01T24:00:00",
        "2024-07-01T12:60:00",
        "2024-02-30T12:00:00",
        "2024-07-01T12:00:00+24:00",
        "2024-07-01T12:00:00 Z",
        "01/07/2024 12:00",
        "2024-07-01t12:00:00",
    ],
)
def test_invalid_iso_datetimes(value: str) -> None:
    assert run(checks.iso_datetime("v"), [value]) == [False]
    assert run(checks.parse_iso_datetime("v", CHICAGO), [value]) == [None]


def test_dst_gap_and_overlap_are_flagged_not_guessed() -> None:
    values = [
        "2024-03-10T02:30:00",  # does not exist in Chicago (clocks jump 02:00 -> 03:00)
        "2024-11-03T01:30:00",  # happens twice in Chicago (CDT, then CST)
        "2024-11-03T01:30:00-05:00",  # an explicit offset settles it
        "2024-03-10T03:30:00",
    ]
    assert run(checks.local_time_exists("v", CHICAGO), values) == [False, True, True, True]
    assert run(checks.local_time_unambiguous("v", CHICAGO), values) == [True, False, True, True]
    parsed = run(checks.parse_iso_datetime("v", CHICAGO), values)
    assert parsed[:2] == [None, None]
    assert parsed[2] == datetime(2024, 11, 3, 6, 30, tzinfo=UTC)
    assert parsed[3] == datetime(2024, 3, 10, 8, 30, tzinfo=UTC)


def test_not_after_compares_instants_across_offsets() -> None:
    frame = pl.DataFrame(
        {
            "a": ["2024-07-01T12:00:00Z", "2024-07-01T12:00:00", "2024-07-01T12:00:00Z", "junk"],
            "b": ["2024-07-01T06:59:00-05:00", "2024-07-01T16:59:59Z", "2024-07-01T12:00:00Z", "x"],
        }
    )
    result = frame.select(checks.not_after("a", "b", CHICAGO)).to_series().to_list()
    assert result == [False, False, True, True]


def test_one_of_and_matches() -> None:
    assert run(checks.one_of("v", ["M", "F"], case_insensitive=True), ["m", " F ", "X"]) == [
        True,
        True,
        False,
    ]
    assert run(checks.one_of("v", ["H", "HH"]), ["hh", "HH"]) == [False, True]
    zip_rule = checks.matches("v", r"^[0-9]{5}(?:-[0-9]{4})?$")
    assert run(zip_rule, ["02134", "02134-1234", "2134", "02134-12"]) == [True, True, False, False]


def test_unique_flags_every_row_of_a_duplicate() -> None:
    values = ["R1", "R2", "R1", " R2", "R3", "", ""]
    assert run(checks.unique("v"), values) == [False, False, False, False, True, True, True]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1", True),
        ("-1.5", True),
        ("+0.25", True),
        (".5", True),
        ("5.", True),
        (" 7 ", True),
        ("1e3", False),
        ("NaN", False),
        ("inf", False),
        ("<5", False),
        ("5 mg", False),
        ("1,5", False),
    ],
)
def test_numeric(value: str, ok: bool) -> None:
    assert run(checks.numeric("v"), [value]) == [ok]
    assert (run(checks.parse_numeric("v"), [value])[0] is not None) is ok


def test_column_check_names_the_rule_in_pandera() -> None:
    schema = pa.DataFrameSchema(
        {"npi": pa.Column(pl.String, checks=[checks.column_check("npi_luhn", checks.npi_luhn)])}
    )
    frame = pl.DataFrame({"npi": ["1234567893", "1234567890"]})
    with pytest.raises(SchemaErrors) as caught:
        schema.validate(frame, lazy=True)
    (error,) = caught.value.schema_errors
    assert error.check.name == "npi_luhn"
    assert error.check_output is not None
    assert error.check_output.to_series().to_list() == [True, False]
