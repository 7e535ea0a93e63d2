"""Synthetic HL7 v2 lab files: lab_results rows rendered as FHS/BHS/ORU^R01…/BTS/FTS batches.

`render_lab_hl7(frame)` writes the rows of `generate_lab_rows` the way a lab's interface
engine would: one ORU^R01 message per patient (rows grouped by every patient column,
in order of first appearance), an ORC/OBR per order (consecutive rows sharing provider
and times share one), and one OBX per row with the record id in OBX-21. The HL7 reader
gives back the same strings per column, in `hl7_row_order(frame)` order, with two
spellings that HL7 cannot carry normalised: a date-time's 'T' separator (a space
comes back as 'T') and '±HH' zones (come back as '±HH:00'). Values that are not ISO
dates or date-times are written as they are (escaped), so planted bad rows stay bad
for the same reasons; a raw value that happens to look like an HL7 date-time would
come back converted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Literal

import polars as pl

from batchbridge.validations.checks import ISO_DATE_PATTERN, ISO_DATETIME_PATTERN
from batchbridge.validations.schemas.lab_results import COLUMNS

PATIENT_COLUMNS: tuple[str, ...] = (
    "patient_mrn",
    "patient_first_name",
    "patient_last_name",
    "patient_dob",
    "patient_sex",
    "patient_zip",
)
"""Rows sharing all of these go into one message (one PID)."""

ORDER_COLUMNS: tuple[str, ...] = (
    "ordering_provider_npi",
    "specimen_collected_at",
    "resulted_at",
)
"""Consecutive rows of a message sharing all of these share one ORC/OBR."""

_ISO_DATE = re.compile(ISO_DATE_PATTERN)
_ISO_DATETIME = re.compile(ISO_DATETIME_PATTERN)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_ORDER_INDEX = "__hl7_order"

Envelope = Literal["file", "batch", "none"]


def hl7_row_order(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` in the order its rows come back from the HL7 reader (grouped by patient)."""
    if frame.is_empty():
        return frame
    indexed = frame.with_row_index(_ORDER_INDEX)
    order = (
        indexed.group_by(list(PATIENT_COLUMNS), maintain_order=True)
        .agg(pl.col(_ORDER_INDEX))
        .get_column(_ORDER_INDEX)
        .explode()
    )
    return frame[order.to_list()]


def render_lab_hl7(
    frame: pl.DataFrame,
    *,
    file_date: date = date(2026, 11, 20),
    batches: int = 1,
    envelope: Envelope = "file",
    bts_counts: Mapping[int, int] | None = None,
    fts_count: int | None = None,
    segment_end: str = "\r",
    encoding: Literal["utf-8", "latin-1"] = "utf-8",
) -> bytes:
    """lab_results rows (strings, as `generate_lab_rows` makes them) as an HL7 v2 file.

    batches: the messages are split over this many BHS … BTS batches (some may be empty).
    envelope: 'file' (FHS/BHS … BTS/FTS), 'batch' (BHS … BTS only) or 'none' (bare messages).
    bts_counts: batch number (1-based) -> the count to write in its BTS-1 instead of the
    real one; fts_count: the same for FTS-1. Both corrupt the trailer check on purpose.
    segment_end: '\\r' (the standard), '\\r\\n' or '\\n'.
    encoding: the character set of the bytes (every value must be representable in it).
    """
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks lab_results columns: {missing}")
    if batches < 1:
        raise ValueError("batches must be >= 1")
    stamp = f"{file_date:%Y%m%d}020000"
    messages = _messages(hl7_row_order(frame), stamp)
    per_batch = (
        _even_split(len(messages), batches) if envelope != "none" else [list(range(len(messages)))]
    )
    segments: list[str] = []
    if envelope == "file":
        segments.append(f"FHS|^~\\&|ACME_LIS|ACME_LAB|BATCHBRIDGE|ACME|{stamp}")
    for number, indices in enumerate(per_batch, start=1):
        if envelope != "none":
            segments.append(f"BHS|^~\\&|ACME_LIS|ACME_LAB|BATCHBRIDGE|ACME|{stamp}")
        for index in indices:
            segments.extend(messages[index])
        if envelope != "none":
            count = (bts_counts or {}).get(number, len(indices))
            segments.append(f"BTS|{count}")
    if envelope == "file":
        segments.append(f"FTS|{batches if fts_count is None else fts_count}")
    text = "".join(segment + segment_end for segment in segments)
    return text.encode(encoding)


def _even_split(total: int, parts: int) -> list[list[int]]:
    """Consecutive index ranges of `total` items over `parts` parts, sizes differing by <= 1."""
    size, extra = divmod(total, parts)
    ranges: list[list[int]] = []
    start = 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        ranges.append(list(range(start, end)))
        start = end
    return ranges


def _messages(frame: pl.DataFrame, stamp: str) -> list[list[str]]:
    """One ORU^R01 message (list of segments) per run of rows sharing the patient columns."""
    messages: list[list[str]] = []
    previous_patient: tuple[str, ...] | None = None
    previous_order: tuple[str, ...] | None = None
    current: list[str] = []
    orders = 0
    observations = 0
    for row in frame.select(COLUMNS).iter_rows(named=True):
        patient = tuple(row[column] for column in PATIENT_COLUMNS)
        if patient != previous_patient:
            control_id = f"MSG{len(messages) + 1:08d}"
            current = [
                f"MSH|^~\\&|ACME_LIS|ACME_LAB|BATCHBRIDGE|ACME|{stamp}||ORU^R01^ORU_R01|"
                f"{control_id}|P|2.5.1",
                _segment(
                    "PID",
                    {
                        1: "1",
                        3: _components(row["patient_mrn"], "", "", "ACME", "MR"),
                        5: _components(row["patient_last_name"], row["patient_first_name"]),
                        7: _hl7_date(row["patient_dob"]),
                        8: escape(row["patient_sex"]),
                        11: _components("", "", "", "", row["patient_zip"]),
                    },
                ),
            ]
            messages.append(current)
            previous_patient, previous_order = patient, None
            orders = 0
        order = tuple(row[column] for column in ORDER_COLUMNS)
        if order != previous_order:
            orders += 1
            observations = 0
            npi = escape(row["ordering_provider_npi"])
            current.append(_segment("ORC", {1: "RE", 12: npi}))
            current.append(
                _segment(
                    "OBR",
                    {
                        1: str(orders),
                        3: f"{control_id}.{orders}",
                        4: _components(row["local_test_code"], row["test_name"], "L"),
                        7: _hl7_datetime(row["specimen_collected_at"]),
                        16: npi,
                        22: _hl7_datetime(row["resulted_at"]),
                        25: "F",
                    },
                )
            )
            previous_order = order
        observations += 1
        value = row["result_value"]
        current.append(
            _segment(
                "OBX",
                {
                    1: str(observations),
                    2: "NM" if _NUMBER.fullmatch(value) else "ST",
                    3: _components(row["local_test_code"], row["test_name"], "L"),
                    5: escape(value),
                    6: escape(row["result_unit"]),
                    7: escape(row["reference_range"]),
                    8: escape(row["abnormal_flag"]),
                    11: escape(row["result_status"]),
                    21: escape(row["record_id"]),
                },
            )
        )
    return messages


def _segment(kind: str, fields: Mapping[int, str]) -> str:
    """'KIND|f1|f2…' with the given (already escaped) fields, up to the last one given."""
    last = max(fields)
    return "|".join([kind, *(fields.get(n, "") for n in range(1, last + 1))])


def _components(*values: str) -> str:
    return "^".join(escape(value) for value in values).rstrip("^")


def escape(value: str) -> str:
    """`value` with HL7's (default) delimiters escaped, and ASCII control characters (line
    breaks included) as \\Xhh\\, so no value can end a segment or split a field."""
    out: list[str] = []
    for ch in value:
        if ch == "\\":
            out.append("\\E\\")
        elif ch == "|":
            out.append("\\F\\")
        elif ch == "^":
            out.append("\\S\\")
        elif ch == "&":
            out.append("\\T\\")
        elif ch == "~":
            out.append("\\R\\")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\X{ord(ch):02X}\\")
        else:
            out.append(ch)
    return "".join(out)


def _hl7_date(value: str) -> str:
    """'YYYY-MM-DD' -> 'YYYYMMDD'; any other value escaped as it is."""
    if _ISO_DATE.fullmatch(value):
        return value.replace("-", "")
    return escape(value)


def _hl7_datetime(value: str) -> str:
    """ISO 8601 date-time -> 'YYYYMMDDHHMM[SS[.S…]][±ZZZZ]'; any other value escaped."""
    match = _ISO_DATETIME.fullmatch(value)
    if match is None:
        return escape(value)
    text = match["date"].replace("-", "") + match["hour"] + match["minute"]
    if match["second"] is not None:
        text += match["second"]
        if match["fraction"] is not None:
            text += "." + match["fraction"]
    zone = match["zone"]
    if zone == "Z":
        text += "+0000"
    elif zone is not None:
        digits = zone[1:].replace(":", "")
        text += zone[0] + digits.ljust(4, "0")
    return text
