"""Reader for HL7 v2 batch files (FHS/BHS … BTS/FTS of ORU^R01): one row per OBX.

What a file must be, and what each failure raises (messages name batch, message and
segment numbers and field positions, never a value):

- Text in `fmt.encoding` (a UTF-8 BOM is dropped); NUL bytes or invalid bytes
  -> MalformedFileError with the byte offset and segment number.
- Segments end in CR (the standard), CRLF or LF; blank lines are skipped. Segment
  numbers in messages count the non-blank segments of the file, from 1.
- Envelope: an optional FHS (first segment) … FTS (last segment), around batches
  BHS … BTS, each holding messages that start with MSH. Several batches are allowed.
  A batch left open, an FHS without FTS, a stray BHS/BTS/FTS, or segments after FTS
  -> MalformedFileError. With `fmt.require_batch_envelope` (the default) every message
  must sit inside a batch and a file without one is refused; without it, plain
  concatenated messages are read too.
- BTS-1 (the batch's message count) and FTS-1 (the file's batch count) are required:
  a count that differs -> TrailerMismatchError 'batch N: BTS says X messages, file has Y'
  or 'FTS says X batches, file has Y'. This is the file's trailer check, done here, so
  `ParsedFile.declared_count` is None: the counts are of messages and batches, while
  reconciliation compares a declared count with rows (OBX segments).
- Every message is ORU^R01 (MSH-9.1 'ORU', MSH-9.2 'R01'), has valid MSH-1/MSH-2
  encoding characters, and holds at least one OBX, each after an OBR
  -> MalformedFileError naming the message and segment number.

Rows: each OBX is one lab_results row, read with the PID, ORC and OBR before it in its
message (ORU^R01: MSH, [PID], {[ORC] OBR {OBX}}); NTE, PV1, SPM, Z-segments… are skipped.

- record_id: OBX-21.1 (observation instance identifier); else
  '<OBR-3.1>-<OBX-3.1>[-<OBX-4>]' (filler order number, test code, sub-id: what a
  corrected result repeats, so a 'C' row updates the row it corrects); else
  '<MSH-10>-<k>', k = the OBX's position in its message; empty without an MSH-10.
- patient_mrn: PID-3.1 of the repetition whose PID-3.5 is 'MR', else of the first.
- patient_last_name, patient_first_name: PID-5.1, PID-5.2 of the legal name (the
  repetition whose PID-5.7 is 'L'), else of the first repetition.
- patient_dob: PID-7.1, 'YYYYMMDD[HHMM…]' becoming 'YYYY-MM-DD'.
- patient_sex: PID-8. patient_zip: PID-11.5 (first repetition).
- ordering_provider_npi: ORC-12.1 of the order's ORC, else OBR-16.1 (first repetitions).
- specimen_collected_at: OBR-7.1. resulted_at: OBR-22.1, else OBX-19.1.
- local_test_code, test_name: OBX-3.1, OBX-3.2. result_unit: OBX-6.1.
- result_value: OBX-5; for coded types (CE/CWE/CNE/CF) its text (.2, else .1), for SN
  its parts joined ('<^5' -> '<5'), for other types the whole field.
- reference_range, abnormal_flag, result_status: OBX-7, OBX-8, OBX-11 (whole fields).

Date-times 'YYYYMMDDHHMM[SS[.S…]][±ZZZZ]' become ISO 8601 ('YYYY-MM-DDTHH:MM[:SS[.S…]]',
'Z' for +0000, else '±HH:MM'). Nothing is defaulted: an absent field is the empty
string, and a value that is not in the HL7 form (a date-time without minutes, a
partial date, text) is passed through as it is, so the lab schema quarantines the row
with the column and rule. Where HL7 repeats a field to list alternatives (identifiers,
names, addresses, providers) one repetition is chosen as above; any other field that
repeats is passed through whole, repetition separators included.

Escape sequences are decoded in every value: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ (the message's
own delimiters), \\Xhh…\\ (bytes in the file's encoding), \\.br\\ (line break); \\H\\
and \\N\\ (highlighting) are dropped; any other sequence is kept as it is. python-hl7's
own unescape is not used: it logs the field it decodes, and that is patient data.
"""

from __future__ import annotations

from typing import Any

import hl7
import polars as pl

from batchbridge.config import Hl7v2FormatConfig
from batchbridge.errors import ConfigError, MalformedFileError
from batchbridge.validations.base import ROW_COLUMN, ParsedFile
from batchbridge.validations.readers.hl7v2_segments import (
    Message,
    decode_text,
    group_messages,
    split_segments,
)
from batchbridge.validations.readers.hl7v2_values import (
    Delimiters,
    component_of,
    field_value,
    iso_date,
    iso_datetime,
    repetitions_of,
    unescape,
)
from batchbridge.validations.schemas.lab_results import COLUMNS as LAB_COLUMNS

# python-hl7 strips the whitespace around a message's text, which would eat the end of
# the last segment's last value: a throwaway segment after it keeps that value whole.
_SENTINEL = "ZZZ"
_CODED_TYPES = frozenset({"CE", "CWE", "CNE", "CF"})
# The segments rows are made of, and the last field read of each (MSH counts MSH-1 in).
_FIELDS_READ = {"MSH": 10, "PID": 11, "ORC": 12, "OBR": 22, "OBX": 21}


def read_hl7v2(data: bytes, fmt: Hl7v2FormatConfig, columns: tuple[str, ...]) -> ParsedFile:
    """Parse an HL7 v2 batch into lab_results rows (strings), checking the BTS/FTS counts.

    The frame has the schema's `columns` (in schema order) and ROW_COLUMN (UInt32,
    1-based OBX number in the file).
    """
    if len(columns) != len(LAB_COLUMNS) or set(columns) != set(LAB_COLUMNS):
        raise ConfigError(
            "the hl7v2 format reads lab observations only: the feed's schema must have "
            "the lab_results columns"
        )
    text = decode_text(data, fmt.encoding)
    segments = split_segments(text)
    if not segments:
        raise MalformedFileError("file is empty: no segments")
    messages = group_messages(segments, fmt)
    values: dict[str, list[str]] = {column: [] for column in LAB_COLUMNS}
    for message in messages:
        _read_message(message, fmt.encoding, values)
    rows = len(values["record_id"])
    frame = pl.DataFrame(
        [pl.Series(column, values[column], dtype=pl.String) for column in columns]
        + [pl.Series(ROW_COLUMN, range(1, rows + 1), dtype=pl.UInt32)]
    )
    return ParsedFile(frame=frame, declared_count=None)


def _read_message(message: Message, charset: str, values: dict[str, list[str]]) -> None:
    """Append one row per OBX of `message` to `values`."""
    msh = message.segments[0]
    where = f"message {message.number} (segment {msh.number})"
    text = msh.text
    encoding = text[4 : text.find(text[3], 4)] if text.find(text[3], 4) >= 0 else text[4:]
    delimiters = Delimiters(
        field=text[3],
        component=encoding[0],
        repetition=encoding[1],
        escape=encoding[2],
        subcomponent=encoding[3],
        charset=charset,
    )
    # Only the segments and fields rows are made of go through python-hl7: it builds an
    # object per field, repetition and component, so this keeps time and memory down.
    read = [segment for segment in message.segments if segment.id in _FIELDS_READ]
    texts = [
        delimiters.field.join(s.text.split(delimiters.field, _FIELDS_READ[s.id] + 1)[:-1])
        if s.text.count(delimiters.field) > _FIELDS_READ[s.id]
        else s.text
        for s in read
    ]
    try:
        parsed = hl7.parse("\r".join(texts) + "\r" + _SENTINEL)
    except Exception as exc:
        # The library's messages can quote the segment they choke on: name the class only.
        raise MalformedFileError(f"{where}: not parseable as HL7 ({type(exc).__name__})") from None
    if len(parsed) != len(read) + 1:
        raise MalformedFileError(f"{where}: segments do not split as expected")
    hl7_segments: list[Any] = list(parsed)[:-1]

    message_type = repetitions_of(hl7_segments[0], 9)
    first = message_type[0] if message_type else ""
    if component_of(first, 1) != "ORU" or component_of(first, 2) != "R01":
        raise MalformedFileError(f"{where}: MSH-9 is not ORU^R01")
    control_id = field_value(hl7_segments[0], 10, delimiters)

    pid: Any = None
    orc: Any = None  # the ORC waiting for its OBR
    order_orc: Any = None  # the ORC of the current OBR
    obr: Any = None
    observations = 0
    for segment, hl7_segment in zip(read[1:], hl7_segments[1:], strict=True):
        kind = segment.id
        if kind == "PID":
            pid, orc, order_orc, obr = hl7_segment, None, None, None
        elif kind == "ORC":
            orc = hl7_segment
        elif kind == "OBR":
            obr, order_orc, orc = hl7_segment, orc, None
        elif kind == "OBX":
            if obr is None:
                raise MalformedFileError(
                    f"message {message.number}, segment {segment.number}: OBX before any OBR"
                )
            observations += 1
            row = _row(pid, order_orc, obr, hl7_segment, delimiters)
            if not row["record_id"]:
                row["record_id"] = f"{control_id}-{observations}" if control_id else ""
            for column, value in row.items():
                values[column].append(value)
    if not observations:
        raise MalformedFileError(f"{where}: no OBX segment (a message without results)")


def _row(pid: Any, orc: Any, obr: Any, obx: Any, d: Delimiters) -> dict[str, str]:
    """One lab_results row (record_id empty when it must come from MSH-10)."""
    code = field_value(obx, 3, d)
    record_id = field_value(obx, 21, d)
    if not record_id:
        filler = field_value(obr, 3, d)
        if filler:
            sub_id = field_value(obx, 4, d, component=None)
            record_id = f"{filler}-{code}" + (f"-{sub_id}" if sub_id else "")
    npi = _first(orc, 12, 1, d) if orc is not None else ""
    resulted = field_value(obr, 22, d) or field_value(obx, 19, d)
    name = _choose(repetitions_of(pid, 5), 7, "L")
    return {
        "record_id": record_id,
        "patient_mrn": _mrn(pid, d),
        "patient_first_name": unescape(component_of(name, 2), d),
        "patient_last_name": unescape(component_of(name, 1), d),
        "patient_dob": iso_date(field_value(pid, 7, d)),
        "patient_sex": field_value(pid, 8, d, component=None),
        "patient_zip": _first(pid, 11, 5, d),
        "ordering_provider_npi": npi or _first(obr, 16, 1, d),
        "specimen_collected_at": iso_datetime(field_value(obr, 7, d)),
        "resulted_at": iso_datetime(resulted),
        "local_test_code": code,
        "test_name": field_value(obx, 3, d, component=2),
        "result_value": _result_value(obx, d),
        "result_unit": field_value(obx, 6, d),
        "reference_range": field_value(obx, 7, d, component=None),
        "abnormal_flag": field_value(obx, 8, d, component=None),
        "result_status": field_value(obx, 11, d, component=None),
    }


def _mrn(pid: Any, d: Delimiters) -> str:
    return unescape(component_of(_choose(repetitions_of(pid, 3), 5, "MR"), 1), d)


def _choose(repetitions: list[Any], component: int, code: str) -> Any:
    """The first repetition whose `component` is `code`, else the first one ('' if none)."""
    if not repetitions:
        return ""
    return next((r for r in repetitions if component_of(r, component) == code), repetitions[0])


def _first(segment: Any, number: int, component: int, d: Delimiters) -> str:
    """`component` of field `number`'s first repetition, unescaped."""
    repetitions = repetitions_of(segment, number)
    return unescape(component_of(repetitions[0], component), d) if repetitions else ""


def _result_value(obx: Any, d: Delimiters) -> str:
    repetitions = repetitions_of(obx, 5)
    if len(repetitions) != 1:
        return field_value(obx, 5, d, component=None)
    value_type = field_value(obx, 2, d)
    only = repetitions[0]
    if value_type in _CODED_TYPES:
        return unescape(component_of(only, 2) or component_of(only, 1), d)
    if value_type == "SN":
        return "".join(unescape(component_of(only, n), d) for n in range(1, 5))
    return field_value(obx, 5, d, component=None)
