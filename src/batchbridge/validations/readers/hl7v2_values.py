"""Values out of python-hl7's containers: repetitions, components, escapes, date-times.

Part of the hl7v2 reader (its module docstring says how each value is read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_HL7_DATETIME = re.compile(
    r"(?P<year>[0-9]{4})(?P<month>[0-9]{2})(?P<day>[0-9]{2})"
    r"(?:(?P<hour>[0-9]{2})(?P<minute>[0-9]{2})"
    r"(?:(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?)?)?"
    r"(?P<zone>[+-][0-9]{4})?"
)


@dataclass(frozen=True)
class Delimiters:
    """A message's encoding characters (MSH-1, MSH-2) and the file's character set."""

    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str
    charset: str


# -- python-hl7 containers ------------------------------------------------------------------
# python-hl7 gives a segment as a list whose item n is field n (item 0 is the segment id;
# for MSH item 1 is MSH-1). A field is a list of repetitions; a repetition is either the
# plain string (when the field holds no delimiter) or a list of components; str() of any
# part gives its raw text back, delimiters included.


def repetitions_of(segment: Any, number: int) -> list[Any]:
    """The repetitions of field `number` ([] when the segment is absent or shorter)."""
    if segment is None or number >= len(segment):
        return []
    item = segment[number]
    if isinstance(item, str):
        return [item]
    return list(item)


def component_of(repetition: Any, number: int) -> str:
    """Component `number` (1-based) of a repetition, raw ('' when it has fewer)."""
    if isinstance(repetition, str):
        return repetition if number == 1 else ""
    return str(repetition[number - 1]) if number <= len(repetition) else ""


def field_value(segment: Any, number: int, d: Delimiters, *, component: int | None = 1) -> str:
    """Field `number` of `segment`, unescaped: its first repetition's `component`, or the
    whole field (every repetition and component, delimiters kept) when component is None
    or when the field repeats."""
    repetitions = repetitions_of(segment, number)
    if not repetitions:
        return ""
    if component is None or len(repetitions) > 1:
        return unescape(str(segment[number]), d)
    return unescape(component_of(repetitions[0], component), d)


# -- values ---------------------------------------------------------------------------------


def unescape(text: str, d: Delimiters) -> str:
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


def _decode_sequence(sequence: str, d: Delimiters) -> str | None:
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


def iso_date(value: str) -> str:
    """'YYYYMMDD[HHMM…]' -> 'YYYY-MM-DD'; anything else unchanged."""
    match = _HL7_DATETIME.fullmatch(value)
    if match is None:
        return value
    return f"{match['year']}-{match['month']}-{match['day']}"


def iso_datetime(value: str) -> str:
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
