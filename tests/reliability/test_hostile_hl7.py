"""Hostile HL7 v2 plaintexts: rejected whole with a clear reason, or every OBX accounted for."""

from __future__ import annotations

import time

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchbridge.config import Hl7v2FormatConfig
from batchbridge.validations.parse import ValidatedFile
from tests.reliability.conftest import FULL, RANDOM_IN_OTHER_THREADS, Figures, hostile_settings
from tests.reliability.hostile_harness import (
    CANARY,
    PlaintextHarness,
    good_frame,
    mutated_files,
    random_splices,
    replace_cell,
)
from tests.support.hl7_data import render_lab_hl7

HARNESS = PlaintextHarness(
    fmt=Hl7v2FormatConfig(),
    reasons=frozenset({"malformed_file", "trailer_mismatch"}),
    max_message=500,
    declares_rows=False,  # the BTS/FTS counts are checked by the reader
)
attempt = HARNESS.attempt
LOOSE = Hl7v2FormatConfig(require_batch_envelope=False)
GENERATED = hostile_settings(quick=150, full=3000)
GOOD = render_lab_hl7(good_frame())


def cell_of(validated: ValidatedFile, rid: str, column: str) -> str:
    """The value the OBX with record_id `rid` holds in `column`, wherever validation put it."""
    for frame in (validated.result.valid, validated.result.quarantined):
        match = frame.filter(pl.col("record_id") == rid)
        if match.height:
            value: str = match[column].item()
            return value
    raise AssertionError(f"{rid} is neither valid nor quarantined")


def record_id(row: int) -> str:
    """The record_id generate_lab_rows gives row `row`."""
    return f"R{row:09d}"


# -- the fixed corpus -----------------------------------------------------------------------

SEGMENTS = GOOD.split(b"\r")


def replace_segment(prefix: bytes, new: bytes, data: bytes = GOOD) -> bytes:
    """`data` with the first segment starting with `prefix` replaced by `new`."""
    parts = data.split(b"\r")
    index = next(i for i, part in enumerate(parts) if part.startswith(prefix))
    parts[index] = new
    return b"\r".join(parts)


def truncated_at(fraction: float) -> bytes:
    return GOOD[: int(len(GOOD) * fraction)]


CORPUS: dict[str, bytes] = {
    "empty": b"",
    "only_blank_lines": b"\r\n\r\n\n\r",
    "bom_only": b"\xef\xbb\xbf",
    "truncated_10": truncated_at(0.1),
    "truncated_50": truncated_at(0.5),
    "truncated_99": truncated_at(0.99),
    "no_fts": GOOD[: GOOD.rindex(b"FTS|")],
    "bts_off_by_one": GOOD.replace(b"BTS|", b"BTS|1"),
    "bts_huge": GOOD.replace(b"BTS|", b"BTS|" + b"9" * 5000),
    "bts_negative": GOOD.replace(b"BTS|", b"BTS|-"),
    "bts_canary": GOOD.replace(b"BTS|", b"BTS|" + CANARY.encode()),
    "fts_wrong": GOOD.replace(b"FTS|1", b"FTS|7"),
    "adt_message": GOOD.replace(b"ORU^R01", b"ADT^A01", 1),
    "msh_without_encoding": replace_segment(b"MSH|", b"MSH"),
    "msh_one_separator": replace_segment(b"MSH|", b"MSH|"),
    "msh_repeated_separators": replace_segment(b"MSH|", b"MSH|^^^^|A|B||||ORU^R01|1"),
    "msh_alnum_separators": replace_segment(b"MSH|", b"MSHA^~\\&AxAyAAAORU^R01"),
    "nested_bhs": GOOD.replace(b"BTS|", b"BHS|^~\\&\rBTS|", 1),
    "segment_after_fts": GOOD + b"PID|" + CANARY.encode() + b"\r",
    "pid_before_msh": GOOD.replace(b"\rMSH|", b"\rPID|1||" + CANARY.encode() + b"\rMSH|", 1),
    "obx_without_obr": GOOD.replace(b"\rOBR|", b"\rNTE|", 1),
    "lower_case_segment": GOOD.replace(b"\rPID|", b"\rpid|", 1),
    "canary_segment_id": GOOD.replace(b"\rPID|", b"\r" + CANARY.encode() + b"|", 1),
    "mllp_framed": b"\x0b" + GOOD + b"\x1c\r",
    "utf16": GOOD.decode().encode("utf-16"),
    "latin1_in_utf8": GOOD.replace(CANARY.encode(), CANARY.encode() + b"\xe9"),
    "nul_in_name": GOOD.replace(CANARY.encode(), CANARY.encode() + b"\x00"),
    "unterminated_escape": GOOD.replace(CANARY.encode(), CANARY.encode() + b"\\X4"),
    "bad_hex_escape": GOOD.replace(CANARY.encode(), b"\\XZZ\\" + CANARY.encode()),
    "half_utf8_hex": GOOD.replace(CANARY.encode(), b"\\XC3\\" + CANARY.encode()),
    "repetition_bomb_escape": GOOD.replace(CANARY.encode(), b"\\.sp999999999\\"),
    "field_separator_swap": GOOD.replace(b"\rOBX|", b"\rOBX#", 1),
    "every_delimiter": GOOD.replace(CANARY.encode(), b"|^~\\&" * 50),
}


# Broken escapes are data, not structure: the value is kept as it came (see the reader).
KEPT_AS_DATA = {
    "bad_hex_escape",
    "every_delimiter",
    "half_utf8_hex",
    "repetition_bomb_escape",
    "unterminated_escape",
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_corpus(name: str, reliability_figures: Figures) -> None:
    data = CORPUS[name]
    outcome = attempt(data, reliability_figures)
    assert (outcome.rejected is None) == (name in KEPT_AS_DATA), str(outcome.rejected)
    for fmt in (LOOSE, Hl7v2FormatConfig(encoding="latin-1")):
        attempt(data, reliability_figures, fmt)


def test_unknown_escapes_are_kept_verbatim(reliability_figures: Figures) -> None:
    outcome = attempt(CORPUS["repetition_bomb_escape"], reliability_figures)
    assert outcome.validated is not None
    names = [*outcome.validated.result.valid["patient_first_name"]]
    assert "\\.sp999999999\\" in names  # not expanded a billion times


def test_a_truncated_file_is_refused_at_every_segment(reliability_figures: Figures) -> None:
    ends = [i for i, byte in enumerate(GOOD) if byte == ord("\r")][:-1]
    for end in ends:
        outcome = attempt(GOOD[: end + 1], reliability_figures)
        # Cut at a segment boundary, the envelope is always left open.
        assert outcome.rejected is not None


def test_a_ten_megabyte_value_is_kept_whole(reliability_figures: Figures) -> None:
    huge = ("text, with |^~&\\ and \n breaks " * 400_000)[: 10 * 1024 * 1024] + CANARY
    frame = replace_cell(good_frame(), 2, "test_name", huge)
    outcome = attempt(render_lab_hl7(frame), reliability_figures)
    assert outcome.validated is not None, str(outcome.rejected)
    assert cell_of(outcome.validated, record_id(2), "test_name") == huge


@pytest.mark.parametrize("delimiter", [b"|", b"^", b"~", b"&"])
def test_many_delimiters_are_read_in_bounded_time(
    delimiter: bytes, reliability_figures: Figures
) -> None:
    started = time.monotonic()
    data = GOOD.replace(CANARY.encode(), CANARY.encode() + delimiter * 200_000, 1)
    attempt(data, reliability_figures)
    assert time.monotonic() - started < 30


def test_hard_to_see_characters_in_values_are_data(reliability_figures: Figures) -> None:
    sneaky = ["\u202eevil", "zero\u200bwidth", "\ufeffbom", "é" * 50, "\u2028line", "\x85nel"]
    frame = good_frame(len(sneaky) + 2)
    for row, value in enumerate(sneaky, start=1):
        frame = replace_cell(frame, row, "patient_first_name", value)
    outcome = attempt(render_lab_hl7(frame), reliability_figures)
    assert outcome.validated is not None, str(outcome.rejected)
    for row, value in enumerate(sneaky, start=1):
        assert cell_of(outcome.validated, record_id(row), "patient_first_name") == value


# -- generated inputs -----------------------------------------------------------------------

TOKENS = [
    CANARY,
    "",
    " ",
    "|",
    "^",
    "~",
    "\\",
    "&",
    "\\F\\",
    "\\E\\",
    "\\X0D\\",
    "\\X",
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\x0b",
    "\x1c",
    "\ufeff",
    "\u2028",
    "é",
    "MSH|^~\\&|",
    "FHS|^~\\&",
    "BHS|^~\\&",
    "BTS|1",
    "FTS|1",
    "PID|1||ABC123456^^^A^MR||Doe^Ann||19800101|F",
    "OBR|1||F1|GLU|||202611190830",
    "OBX|1|NM|GLU^Glucose||95|mg/dL|70-99|N|||F",
    "ORU^R01",
    "202611190830-0600",
    "1234567893",
]
value = st.one_of(st.lists(st.sampled_from(TOKENS), max_size=4).map("".join), st.text(max_size=8))
SEGMENT_IDS = ["MSH", "PID", "ORC", "OBR", "OBX", "NTE", "BHS", "BTS", "FHS", "FTS", "ZZZ", "PV1"]


@st.composite
def segment(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(SEGMENT_IDS))
    fields = draw(st.lists(value, max_size=24))
    if kind in {"MSH", "BHS", "FHS"}:
        encoding = draw(st.sampled_from(["^~\\&", "^~\\&#", "^~", "", "^^\\&", "^~\\&|"]))
        return kind + "|" + encoding + "|" + "|".join(fields)
    return "|".join([kind, *fields])


@st.composite
def structured_files(draw: st.DrawFn) -> bytes:
    """Files shaped like ours: an envelope (maybe broken) around token segments."""
    end = draw(st.sampled_from(["\r", "\r\n", "\n"]))
    segments: list[str] = []
    if draw(st.booleans()):
        segments.append("FHS|^~\\&")
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            segments.append("BHS|^~\\&")
        messages = draw(st.integers(0, 3))
        for _ in range(messages):
            segments.append(
                "MSH|^~\\&|A|B|C|D|20261120||"
                + draw(st.sampled_from(["ORU^R01", "ADT^A01", ""]))
                + "|"
                + draw(value)
            )
            segments.extend(draw(st.lists(segment(), max_size=6)))
        if draw(st.booleans()):
            segments.append(
                f"BTS|{draw(st.sampled_from([str(messages), str(messages + 1), '', 'x']))}"
            )
    if draw(st.booleans()):
        segments.append(f"FTS|{draw(st.integers(-1, 4))}")
    text = end.join(segments) + draw(st.sampled_from(["", end]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


@RANDOM_IN_OTHER_THREADS
@GENERATED
@given(data=st.binary(max_size=2048), prefix=st.sampled_from([b"", b"FHS|^~\\&\rBHS|^~\\&\r"]))
def test_random_bytes_never_crash(data: bytes, prefix: bytes, reliability_figures: Figures) -> None:
    attempt(prefix + data, reliability_figures)


@RANDOM_IN_OTHER_THREADS
@GENERATED
@given(data=structured_files())
def test_structured_hostile_files_never_crash(data: bytes, reliability_figures: Figures) -> None:
    attempt(data, reliability_figures)
    latin = attempt(data, reliability_figures, Hl7v2FormatConfig(encoding="latin-1"))
    # Every byte is latin-1, so that reading can fail on structure only, never on encoding.
    if latin.rejected is not None:
        assert "not valid" not in str(latin.rejected)
    attempt(data, reliability_figures, LOOSE)


@RANDOM_IN_OTHER_THREADS
@GENERATED
@given(data=mutated_files(GOOD, TOKENS, separator=b"\r"))
def test_mutated_valid_files_never_crash(data: bytes, reliability_figures: Figures) -> None:
    attempt(data, reliability_figures)


@RANDOM_IN_OTHER_THREADS
@hostile_settings(quick=50, full=1000)
@given(
    text=st.text(max_size=40),
    column=st.sampled_from(
        ["patient_first_name", "patient_last_name", "test_name", "result_value", "reference_range"]
    ),
    row=st.integers(1, 6),
)
def test_generated_values_are_kept_verbatim(
    text: str, column: str, row: int, reliability_figures: Figures
) -> None:
    frame = replace_cell(good_frame(6, seed=9), row, column, text)
    outcome = attempt(render_lab_hl7(frame), reliability_figures)
    assert outcome.validated is not None, str(outcome.rejected)
    assert cell_of(outcome.validated, record_id(row), column) == text


def test_seeded_random_splices(reliability_figures: Figures) -> None:
    """Random byte splices of a bigger CRLF file, from a fixed seed."""
    base = render_lab_hl7(good_frame(200, seed=4), segment_end="\r\n", batches=3)
    for data in random_splices(base, TOKENS, 2000 if FULL else 60):
        attempt(data, reliability_figures)
