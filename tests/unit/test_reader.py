"""Strict delimited reader: what it accepts, what fails whole, and that errors carry no values."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from batchbridge.config import FormatConfig
from batchbridge.demo.lab_data import generate_lab_rows, render_lab_csv
from batchbridge.errors import (
    FileRejectedError,
    MalformedFileError,
    SchemaDriftError,
    TrailerMismatchError,
)
from batchbridge.validations.base import ROW_COLUMN, ParsedFile
from batchbridge.validations.readers.delimited import read_delimited
from batchbridge.validations.schemas.lab_results import COLUMNS as LAB_COLUMNS

COLUMNS = ("id", "name", "code")
FMT = FormatConfig()
SECRET = "Zebulon"  # stands in for a patient value: must never reach an error message


def read(data: bytes, fmt: FormatConfig = FMT, columns: tuple[str, ...] = COLUMNS) -> ParsedFile:
    return read_delimited(data, fmt, columns)


def rows(parsed: ParsedFile) -> list[tuple[object, ...]]:
    return parsed.frame.drop(ROW_COLUMN).rows()


def rejected(data: bytes, error: type[FileRejectedError], fmt: FormatConfig = FMT) -> str:
    """Read `data`, expect `error`, and check the message and its chain hold no cell value."""
    with pytest.raises(error) as caught:
        read(data, fmt)
    message = str(caught.value)
    assert SECRET not in message
    # A chained exception (e.g. polars' own, which quotes fields) would reach logs too.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None
    return message


def test_plain_file_with_trailer() -> None:
    parsed = read(b"id,name,code\n1,Ann,A\n2,Bob,B\nTRAILER,2\n")
    assert rows(parsed) == [("1", "Ann", "A"), ("2", "Bob", "B")]
    assert parsed.declared_count == 2
    assert parsed.rows_read == 2
    assert parsed.frame[ROW_COLUMN].to_list() == [1, 2]
    assert parsed.frame.schema[ROW_COLUMN] == pl.UInt32
    assert parsed.frame.columns == [*COLUMNS, ROW_COLUMN]


def test_bom_is_dropped() -> None:
    parsed = read(b"\xef\xbb\xbfid,name,code\n1,Ann,A\n")
    assert rows(parsed) == [("1", "Ann", "A")]
    assert parsed.declared_count is None


def test_crlf_line_endings() -> None:
    parsed = read(b'id,name,code\r\n1,Ann,A\r\n2,"B\r\nob",B\r\nTRAILER,2\r\n')
    assert rows(parsed) == [("1", "Ann", "A"), ("2", "B\r\nob", "B")]
    assert parsed.declared_count == 2


def test_rfc4180_quoting_keeps_commas_quotes_and_newlines() -> None:
    data = b'id,name,code\n1,"Smith, Jr.","say ""hi"""\n2,"line1\nline2",",,"\n'
    assert rows(read(data)) == [("1", "Smith, Jr.", 'say "hi"'), ("2", "line1\nline2", ",,")]


def test_every_field_is_a_string_exactly_as_written() -> None:
    data = b'id,name,code\n007,  padded  ,1e3\n0,"",\n'
    parsed = read(data)
    assert rows(parsed) == [("007", "  padded  ", "1e3"), ("0", "", "")]
    assert all(dtype == pl.String for dtype in parsed.frame.drop(ROW_COLUMN).dtypes)
    assert parsed.frame.null_count().row(0) == (0, 0, 0, 0)


def test_header_in_any_order_comes_back_in_schema_order() -> None:
    parsed = read(b"code,id,name\nA,1,Ann\n")
    assert parsed.frame.columns == [*COLUMNS, ROW_COLUMN]
    assert rows(parsed) == [("1", "Ann", "A")]


def test_quoted_header_names() -> None:
    assert rows(read(b'"id","name","code"\n1,Ann,A\n')) == [("1", "Ann", "A")]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"id,name", ["missing columns: 'code'"]),
        # Unknown header cells are located, never echoed: a cell can hold anything.
        (b"id,name,code,extra", ["unknown columns: position 4 (name withheld)"]),
        (
            b"id,name,cod",
            [
                "missing columns: 'code'",
                "unknown columns: position 3 (name withheld, close to expected 'code')",
            ],
        ),
        (b"id,name,code,name", ["duplicate columns: 'name'"]),
    ],
)
def test_schema_drift(header: bytes, expected: list[str]) -> None:
    message = rejected(header + b"\n", SchemaDriftError)
    for part in expected:
        assert part in message


def test_missing_header_does_not_echo_the_first_record() -> None:
    message = rejected(f"1,{SECRET},A\n2,Bob,B\n".encode(), SchemaDriftError)
    assert "header" in message


def test_trailer_mismatch_gives_counts_only() -> None:
    message = rejected(f"id,name,code\n1,{SECRET},A\nTRAILER,2\n".encode(), TrailerMismatchError)
    assert message == "trailer says 2 rows, file has 1"


def test_trailer_forms() -> None:
    assert read(b'id,name,code\n1,Ann,A\n"TRAILER","1"').declared_count == 1
    assert read(b"id,name,code\n1,Ann,A\nTRAILER,1\n\n\n").declared_count == 1
    assert read(b"id,name,code\n1,Ann,A\n\nTRAILER,1\n").declared_count == 1
    # A data record whose first field happens to be TRAILER is data, not a trailer.
    parsed = read(b"id,name,code\nTRAILER,Ann,A\n")
    assert parsed.declared_count is None
    assert rows(parsed) == [("TRAILER", "Ann", "A")]


def test_malformed_trailer() -> None:
    message = rejected(b"id,name,code\n1,Ann,A\nTRAILER,one\n", MalformedFileError)
    assert "TRAILER" in message


def test_trailer_prefix_none_means_no_trailer() -> None:
    fmt = FormatConfig(trailer_prefix=None)
    rejected(b"id,name,code\n1,Ann,A\nTRAILER,1\n", MalformedFileError, fmt)


@pytest.mark.parametrize(
    "data",
    [b"id,name,code", b"id,name,code\n", b"id,name,code\r\n", b"id,name,code\nTRAILER,0\n"],
)
def test_empty_files_are_valid_with_zero_rows(data: bytes) -> None:
    parsed = read(data)
    assert parsed.rows_read == 0
    assert parsed.frame.columns == [*COLUMNS, ROW_COLUMN]
    assert parsed.declared_count == (0 if b"TRAILER" in data else None)


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\n", b"  \r\n"])
def test_no_header_at_all_is_malformed(data: bytes) -> None:
    rejected(data, MalformedFileError)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (f"id,name,code\n1,Ann,A\n2,{SECRET}\n3,Cy,C\n", "record 2 (line 3): 2 fields"),
        (f"id,name,code\n1,Ann,A\n2,{SECRET},B,X\n", "record 2 (line 3): 4 fields"),
        (f"id,name,code\n1,Ann,A\n\n2,{SECRET},B\n", "record 2 (line 3): 0 fields"),
        (f'id,name,code\n1,"A\nnn",A\n2,{SECRET}\n', "record 2 (line 4): 2 fields"),
        (f"id,name,code\n1,{SECRET},\n2,Bob\n", "record 2 (line 3): 2 fields"),
    ],
)
def test_ragged_records_name_the_record(data: str, where: str) -> None:
    assert where in rejected(data.encode(), MalformedFileError)


def test_unclosed_quote() -> None:
    message = rejected(
        f'id,name,code\n1,Ann,A\n2,"{SECRET},B\n3,x,y\n'.encode(), MalformedFileError
    )
    assert "unbalanced quotes" in message
    assert "record 2 (line 3): quoting is broken" in message


def test_quote_inside_unquoted_field() -> None:
    message = rejected(f'id,name,code\n1,Ann,A\n2,{SECRET}"s,B\n'.encode(), MalformedFileError)
    assert "record 2 (line 3): quote inside an unquoted field" in message


def test_text_after_closing_quote() -> None:
    message = rejected(f'id,name,code\n1,"{SECRET}"x,A\n'.encode(), MalformedFileError)
    assert "record 1" in message


def test_nul_byte() -> None:
    data = f"id,name,code\n1,{SECRET}\x00,A\n".encode()
    message = rejected(data, MalformedFileError)
    assert "NUL" in message
    assert f"byte offset {data.index(0)} (line 2)" in message


def test_invalid_utf8_names_the_offset() -> None:
    data = f"id,name,code\n1,{SECRET},A\n".encode() + b"2,B\xffb,B\n"
    message = rejected(data, MalformedFileError)
    assert f"byte offset {data.index(0xFF)} (line 3)" in message


def test_invalid_utf8_in_header() -> None:
    message = rejected(b"id,n\xe9me,code\n1,Ann,A\n", MalformedFileError)
    assert "byte offset 4 (line 1)" in message


def test_offsets_count_the_bom() -> None:
    message = rejected(b"\xef\xbb\xbfid,name,code\n1,\xff,A\n", MalformedFileError)
    assert "byte offset 18" in message


def test_latin1_encoding() -> None:
    fmt = FormatConfig(encoding="latin-1")
    assert rows(read(b"id,name,code\n1,Jos\xe9,A\n", fmt)) == [("1", "José", "A")]


def test_other_delimiter_and_no_quoting() -> None:
    fmt = FormatConfig(delimiter="|", quoting="none")
    parsed = read(b'id|name|code\n1|"Ann"|A, B\nTRAILER|1\n', fmt)
    assert rows(parsed) == [("1", '"Ann"', "A, B")]
    assert parsed.declared_count == 1


def test_headerless_format_uses_schema_order() -> None:
    fmt = FormatConfig(header=False)
    assert rows(read(b"1,Ann,A\nTRAILER,1\n", fmt)) == [("1", "Ann", "A")]


@pytest.mark.parametrize(("crlf", "bom"), [(False, False), (True, True)])
def test_generated_lab_file_round_trips(crlf: bool, bom: bool) -> None:
    frame = generate_lab_rows(300, seed=3, file_date=date(2024, 11, 4))
    data = render_lab_csv(frame.select(reversed(frame.columns)), crlf=crlf, bom=bom)
    parsed = read_delimited(data, FMT, LAB_COLUMNS)
    assert parsed.declared_count == 300
    assert parsed.frame.drop(ROW_COLUMN).equals(frame)
    assert parsed.frame[ROW_COLUMN].to_list() == list(range(1, 301))


@pytest.mark.parametrize(
    "record",
    [b'2,"B\xffb",B\n', b"2,Bob,B\xff\n", b'2,Bob,"\xfe"\n', b"2,Bob,B\xc3\n"],
)
def test_invalid_utf8_anywhere_in_a_record(record: bytes) -> None:
    data = b"id,name,code\n1,Ann,A\n" + record
    bad = next(i for i, byte in enumerate(data) if byte >= 0x80)
    assert f"byte offset {bad} (line 3)" in rejected(data, MalformedFileError)


def test_short_record_is_caught_even_when_values_hold_delimiters() -> None:
    # Two extra commas inside quotes must not hide the comma missing from record 2.
    data = b'id,name,code\n1,"a,b,c",A\n2,Bob\n3,Cy,C\n'
    assert "record 2 (line 3): 2 fields" in rejected(data, MalformedFileError)


def test_large_file_with_multiline_fields_round_trips() -> None:
    # Big enough for polars to split the work into chunks; multi-line quoted fields
    # must not confuse the chunk boundaries.
    frame = generate_lab_rows(30_000, seed=12, file_date=date(2024, 11, 4))
    parsed = read_delimited(render_lab_csv(frame, crlf=True), FMT, LAB_COLUMNS)
    assert parsed.frame.drop(ROW_COLUMN).equals(frame)
    assert parsed.declared_count == 30_000
