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

import re
from dataclasses import dataclass, field
from typing import Any

import hl7
import polars as pl

from batchbridge.config import Hl7v2FormatConfig
from batchbridge.errors import ConfigError, MalformedFileError, TrailerMismatchError
from batchbridge.validations.base import ROW_COLUMN, ParsedFile
from batchbridge.validations.schemas.lab_results import COLUMNS as LAB_COLUMNS

UTF8_BOM = b"\xef\xbb\xbf"
_SEGMENT_END = re.compile(r"\r\n|\r|\n")
_SEGMENT_END_BYTES = re.compile(rb"\r\n|\r|\n")
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_MAX_COUNT_DIGITS = 18  # a count longer than this cannot be a message or batch count
# python-hl7 strips the whitespace around a message's text, which would eat the end of
# the last segment's last value: a throwaway segment after it keeps that value whole.
_SENTINEL = "ZZZ"
_HL7_DATETIME = re.compile(
    r"(?P<year>[0-9]{4})(?P<month>[0-9]{2})(?P<day>[0-9]{2})"
    r"(?:(?P<hour>[0-9]{2})(?P<minute>[0-9]{2})"
    r"(?:(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?)?)?"
    r"(?P<zone>[+-][0-9]{4})?"
)
_CODED_TYPES = frozenset({"CE", "CWE", "CNE", "CF"})
# The segments rows are made of, and the last field read of each (MSH counts MSH-1 in).
_FIELDS_READ = {"MSH": 10, "PID": 11, "ORC": 12, "OBR": 22, "OBX": 21}
# Segment ids named in messages; any other id is data-like (a hostile line's first
# characters) and is not echoed.
_NAMED_SEGMENTS = frozenset(
    {"FHS", "FTS", "BHS", "BTS", "MSH", "SFT", "PID", "PD1", "NK1", "NTE", "PV1", "PV2"}
    | {"ORC", "OBR", "OBX", "TQ1", "TQ2", "CTD", "FT1", "CTI", "SPM", "DSC"}
)


@dataclass(frozen=True)
class _Segment:
    number: int  # 1-based among the file's non-blank segments
    text: str

    @property
    def id(self) -> str:
        return self.text[:3]

    @property
    def name(self) -> str:
        """'segment N (ID)' for messages; the id only when it is a standard one."""
        shown = f" ({self.id})" if self.id in _NAMED_SEGMENTS else ""
        return f"segment {self.number}{shown}"


@dataclass
class _Message:
    number: int  # 1-based across the file
    segments: list[_Segment] = field(default_factory=list)


@dataclass(frozen=True)
class _Delimiters:
    """A message's encoding characters (MSH-1, MSH-2) and the file's character set."""

    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str
    charset: str


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
    text = _decode(data, fmt.encoding)
    segments = _split_segments(text)
    if not segments:
        raise MalformedFileError("file is empty: no segments")
    messages = _envelope(segments, fmt)
    values: dict[str, list[str]] = {column: [] for column in LAB_COLUMNS}
    for message in messages:
        _read_message(message, fmt.encoding, values)
    rows = len(values["record_id"])
    frame = pl.DataFrame(
        [pl.Series(column, values[column], dtype=pl.String) for column in columns]
        + [pl.Series(ROW_COLUMN, range(1, rows + 1), dtype=pl.UInt32)]
    )
    return ParsedFile(frame=frame, declared_count=None)


# -- text and segments ----------------------------------------------------------------------


def _decode(data: bytes, encoding: str) -> str:
    prefix = len(UTF8_BOM) if encoding == "utf-8" and data.startswith(UTF8_BOM) else 0
    nul = data.find(b"\x00", prefix)
    if nul >= 0:
        raise MalformedFileError(
            f"NUL byte at byte offset {nul} (segment {_segment_at(data, prefix, nul)})"
        )
    try:
        return data[prefix:].decode(encoding)
    except UnicodeDecodeError as exc:
        offset = prefix + exc.start
        raise MalformedFileError(
            f"not valid {encoding} at byte offset {offset} "
            f"(segment {_segment_at(data, prefix, offset)})"
        ) from None


def _segment_at(data: bytes, start: int, offset: int) -> int:
    """Number of the (non-blank) segment holding byte `offset`; only used on failure."""
    pieces = _SEGMENT_END_BYTES.split(data[start:offset])
    return sum(1 for piece in pieces[:-1] if piece.strip(b" \t")) + 1


def _split_segments(text: str) -> list[_Segment]:
    segments: list[_Segment] = []
    for piece in _SEGMENT_END.split(text):
        if piece.strip(" \t"):
            segments.append(_Segment(len(segments) + 1, piece))
    return segments


def _header_separator(segment: _Segment, what: str) -> str:
    """The field separator an MSH/BHS/FHS declares, after checking its encoding characters."""
    text = segment.text
    separator = text[3:4]
    end = text.find(separator, 4) if separator else -1
    encoding = text[4:end] if end >= 0 else text[4:]
    delimiters = separator + encoding
    if (
        not separator
        or len(encoding) not in (4, 5)
        or len(set(delimiters)) != len(delimiters)
        or not delimiters.isprintable()
        or any(ch.isalnum() or ch.isspace() for ch in delimiters)
    ):
        raise MalformedFileError(
            f"{what} (segment {segment.number}): {segment.id}-1/{segment.id}-2 encoding "
            "characters are missing or invalid"
        )
    return separator


def _declared_count(segment: _Segment, separator: str, what: str) -> int:
    fields = segment.text.split(separator)
    raw = fields[1] if len(fields) > 1 else ""
    name = f"{segment.id}-1 (segment {segment.number})"
    if not raw:
        raise MalformedFileError(f"{name}: the {what} count is empty")
    if not (raw.isascii() and raw.isdigit()):
        raise MalformedFileError(f"{name}: the {what} count is not a whole number")
    if len(raw) > _MAX_COUNT_DIGITS:
        raise MalformedFileError(f"{name}: the {what} count has {len(raw)} digits")
    return int(raw)


def _envelope(segments: list[_Segment], fmt: Hl7v2FormatConfig) -> list[_Message]:
    """Group segments into messages, checking FHS/BHS/BTS/FTS and their counts."""
    messages: list[_Message] = []
    file_separator: str | None = None  # set by FHS
    file_closed = False
    batches = 0
    batch_separator = "|"
    batch_open = False
    batch_messages = 0
    current: _Message | None = None
    current_separator = "|"

    for index, segment in enumerate(segments):
        where = f"segment {segment.number}"
        if file_closed:
            raise MalformedFileError(f"{where}: segments after FTS")
        kind = segment.id
        if not _SEGMENT_ID.fullmatch(kind):
            raise MalformedFileError(f"{where}: does not start with a segment id")
        if kind == "FHS":
            if index:
                raise MalformedFileError(f"{where}: FHS must be the first segment")
            file_separator = _header_separator(segment, "file header")
        elif kind == "FTS":
            if file_separator is None:
                raise MalformedFileError(f"{where}: FTS without FHS")
            if batch_open:
                raise MalformedFileError(f"{where}: FTS inside batch {batches} (no BTS before it)")
            _check_separator(segment, file_separator, "FHS-1")
            declared = _declared_count(segment, file_separator, "batch")
            if declared != batches:
                raise TrailerMismatchError(f"FTS says {declared} batches, file has {batches}")
            file_closed = True
            current = None
        elif kind == "BHS":
            if batch_open:
                raise MalformedFileError(f"{where}: BHS inside batch {batches} (no BTS before it)")
            batches += 1
            batch_separator = _header_separator(segment, f"batch {batches}")
            batch_open = True
            batch_messages = 0
            current = None
        elif kind == "BTS":
            if not batch_open:
                raise MalformedFileError(f"{where}: BTS without BHS")
            _check_separator(segment, batch_separator, "BHS-1")
            declared = _declared_count(segment, batch_separator, "message")
            if declared != batch_messages:
                raise TrailerMismatchError(
                    f"batch {batches}: BTS says {declared} messages, file has {batch_messages}"
                )
            batch_open = False
            current = None
        elif kind == "MSH":
            number = len(messages) + 1
            if not batch_open and fmt.require_batch_envelope:
                raise MalformedFileError(
                    f"message {number} ({where}) is not inside a batch (BHS … BTS), "
                    "which this feed requires"
                )
            current_separator = _header_separator(segment, f"message {number}")
            current = _Message(number, [segment])
            messages.append(current)
            if batch_open:
                batch_messages += 1
        else:
            if current is None:
                raise MalformedFileError(f"{segment.name} is outside any message")
            _check_separator(segment, current_separator, f"MSH-1 of message {current.number}")
            current.segments.append(segment)

    if batch_open:
        raise MalformedFileError(f"batch {batches} has no BTS (file truncated?)")
    if file_separator is not None and not file_closed:
        raise MalformedFileError("the file has FHS but no FTS (file truncated?)")
    if fmt.require_batch_envelope and not batches:
        raise MalformedFileError("no batch envelope: the file has no BHS … BTS")
    return messages


def _check_separator(segment: _Segment, separator: str, declared_in: str) -> None:
    if len(segment.text) > 3 and segment.text[3] != separator:
        raise MalformedFileError(f"{segment.name}: field separator differs from {declared_in}")


# -- messages -> rows -----------------------------------------------------------------------


def _read_message(message: _Message, charset: str, values: dict[str, list[str]]) -> None:
    """Append one row per OBX of `message` to `values`."""
    msh = message.segments[0]
    where = f"message {message.number} (segment {msh.number})"
    text = msh.text
    encoding = text[4 : text.find(text[3], 4)] if text.find(text[3], 4) >= 0 else text[4:]
    delimiters = _Delimiters(
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

    message_type = _repetitions(hl7_segments[0], 9)
    first = message_type[0] if message_type else ""
    if _component(first, 1) != "ORU" or _component(first, 2) != "R01":
        raise MalformedFileError(f"{where}: MSH-9 is not ORU^R01")
    control_id = _value(hl7_segments[0], 10, delimiters)

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


def _row(pid: Any, orc: Any, obr: Any, obx: Any, d: _Delimiters) -> dict[str, str]:
    """One lab_results row (record_id empty when it must come from MSH-10)."""
    code = _value(obx, 3, d)
    record_id = _value(obx, 21, d)
    if not record_id:
        filler = _value(obr, 3, d)
        if filler:
            sub_id = _value(obx, 4, d, component=None)
            record_id = f"{filler}-{code}" + (f"-{sub_id}" if sub_id else "")
    npi = _first(orc, 12, 1, d) if orc is not None else ""
    resulted = _value(obr, 22, d) or _value(obx, 19, d)
    name = _choose(_repetitions(pid, 5), 7, "L")
    return {
        "record_id": record_id,
        "patient_mrn": _mrn(pid, d),
        "patient_first_name": unescape(_component(name, 2), d),
        "patient_last_name": unescape(_component(name, 1), d),
        "patient_dob": _iso_date(_value(pid, 7, d)),
        "patient_sex": _value(pid, 8, d, component=None),
        "patient_zip": _first(pid, 11, 5, d),
        "ordering_provider_npi": npi or _first(obr, 16, 1, d),
        "specimen_collected_at": _iso_datetime(_value(obr, 7, d)),
        "resulted_at": _iso_datetime(resulted),
        "local_test_code": code,
        "test_name": _value(obx, 3, d, component=2),
        "result_value": _result_value(obx, d),
        "result_unit": _value(obx, 6, d),
        "reference_range": _value(obx, 7, d, component=None),
        "abnormal_flag": _value(obx, 8, d, component=None),
        "result_status": _value(obx, 11, d, component=None),
    }


def _mrn(pid: Any, d: _Delimiters) -> str:
    return unescape(_component(_choose(_repetitions(pid, 3), 5, "MR"), 1), d)


def _choose(repetitions: list[Any], component: int, code: str) -> Any:
    """The first repetition whose `component` is `code`, else the first one ('' if none)."""
    if not repetitions:
        return ""
    return next((r for r in repetitions if _component(r, component) == code), repetitions[0])


def _first(segment: Any, number: int, component: int, d: _Delimiters) -> str:
    """`component` of field `number`'s first repetition, unescaped."""
    repetitions = _repetitions(segment, number)
    return unescape(_component(repetitions[0], component), d) if repetitions else ""


def _result_value(obx: Any, d: _Delimiters) -> str:
    repetitions = _repetitions(obx, 5)
    if len(repetitions) != 1:
        return _value(obx, 5, d, component=None)
    value_type = _value(obx, 2, d)
    only = repetitions[0]
    if value_type in _CODED_TYPES:
        return unescape(_component(only, 2) or _component(only, 1), d)
    if value_type == "SN":
        return "".join(unescape(_component(only, n), d) for n in range(1, 5))
    return _value(obx, 5, d, component=None)


# -- python-hl7 containers ------------------------------------------------------------------
# python-hl7 gives a segment as a list whose item n is field n (item 0 is the segment id;
# for MSH item 1 is MSH-1). A field is a list of repetitions; a repetition is either the
# plain string (when the field holds no delimiter) or a list of components; str() of any
# part gives its raw text back, delimiters included.


def _repetitions(segment: Any, number: int) -> list[Any]:
    if segment is None or number >= len(segment):
        return []
    item = segment[number]
    if isinstance(item, str):
        return [item]
    return list(item)


def _component(repetition: Any, number: int) -> str:
    if isinstance(repetition, str):
        return repetition if number == 1 else ""
    return str(repetition[number - 1]) if number <= len(repetition) else ""


def _value(segment: Any, number: int, d: _Delimiters, *, component: int | None = 1) -> str:
    """Field `number` of `segment`, unescaped: its first repetition's `component`, or the
    whole field (every repetition and component, delimiters kept) when component is None
    or when the field repeats."""
    repetitions = _repetitions(segment, number)
    if not repetitions:
        return ""
    if component is None or len(repetitions) > 1:
        return unescape(str(segment[number]), d)
    return unescape(_component(repetitions[0], component), d)


# -- values ---------------------------------------------------------------------------------


def unescape(text: str, d: _Delimiters) -> str:
    """`text` with HL7 escape sequences decoded (see the module docstring)."""
    escape = d.escape
    if escape not in text:
        return text
    out: list[str] = []
    position = 0
    while True:
        start = text.find(escape, position)
        end = text.find(escape, start + 1) if start >= 0 else -1
        if end < 0:
            out.append(text[position:])
            return "".join(out)
        out.append(text[position:start])
        sequence = text[start + 1 : end]
        decoded = _decode_sequence(sequence, d)
        out.append(text[start : end + 1] if decoded is None else decoded)
        position = end + 1


def _decode_sequence(sequence: str, d: _Delimiters) -> str | None:
    simple = {
        "F": d.field,
        "S": d.component,
        "T": d.subcomponent,
        "R": d.repetition,
        "E": d.escape,
        "H": "",
        "N": "",
        ".br": "\n",
    }
    if sequence in simple:
        return simple[sequence]
    if sequence.startswith("X") and len(sequence) > 1:
        digits = sequence[1:]
        if len(digits) % 2 or not all(ch in "0123456789ABCDEFabcdef" for ch in digits):
            return None
        try:
            return bytes.fromhex(digits).decode(d.charset)
        except UnicodeDecodeError:
            return None
    return None


def _iso_date(value: str) -> str:
    """'YYYYMMDD[HHMM…]' -> 'YYYY-MM-DD'; anything else unchanged."""
    match = _HL7_DATETIME.fullmatch(value)
    if match is None:
        return value
    return f"{match['year']}-{match['month']}-{match['day']}"


def _iso_datetime(value: str) -> str:
    """'YYYYMMDDHHMM[SS[.S…]][±ZZZZ]' -> ISO 8601; anything else (no minutes…) unchanged."""
    match = _HL7_DATETIME.fullmatch(value)
    if match is None or match["minute"] is None:
        return value
    iso = f"{match['year']}-{match['month']}-{match['day']}T{match['hour']}:{match['minute']}"
    if match["second"] is not None:
        iso += f":{match['second']}"
    if match["fraction"] is not None:
        iso += f".{match['fraction']}"
    zone = match["zone"]
    if zone == "+0000":
        iso += "Z"
    elif zone is not None:
        iso += f"{zone[:3]}:{zone[3:]}"
    return iso
