"""HL7 v2 text to segments to messages, checking the FHS/BHS … BTS/FTS envelope and counts.

Part of the hl7v2 reader (its module docstring says what a file must be). Messages name
segment numbers and standard segment ids, never a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from batchbridge.config import Hl7v2FormatConfig
from batchbridge.errors import MalformedFileError, TrailerMismatchError

UTF8_BOM = b"\xef\xbb\xbf"
_SEGMENT_END = re.compile(r"\r\n|\r|\n")
_SEGMENT_END_BYTES = re.compile(rb"\r\n|\r|\n")
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_MAX_COUNT_DIGITS = 18  # a count longer than this cannot be a message or batch count
# Segment ids named in messages; any other id is data-like (a hostile line's first
# characters) and is not echoed.
_NAMED_SEGMENTS = frozenset(
    {"FHS", "FTS", "BHS", "BTS", "MSH", "SFT", "PID", "PD1", "NK1", "NTE", "PV1", "PV2"}
    | {"ORC", "OBR", "OBX", "TQ1", "TQ2", "CTD", "FT1", "CTI", "SPM", "DSC"}
)


@dataclass(frozen=True)
class Segment:
    """One non-blank segment of the file, as text."""

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
class Message:
    """One message (MSH and the segments after it) inside or outside a batch."""

    number: int  # 1-based across the file
    segments: list[Segment] = field(default_factory=list)


def decode_text(data: bytes, encoding: str) -> str:
    """The file as text (a UTF-8 BOM dropped); NUL or invalid bytes fail with their place."""
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


def split_segments(text: str) -> list[Segment]:
    """The non-blank segments, numbered from 1, whatever the line ends (CR, CRLF, LF)."""
    segments: list[Segment] = []
    for piece in _SEGMENT_END.split(text):
        if piece.strip(" \t"):
            segments.append(Segment(len(segments) + 1, piece))
    return segments


def _header_separator(segment: Segment, what: str) -> str:
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


def _declared_count(segment: Segment, separator: str, what: str) -> int:
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


def group_messages(segments: list[Segment], fmt: Hl7v2FormatConfig) -> list[Message]:
    """Group segments into messages, checking FHS/BHS/BTS/FTS and their counts."""
    messages: list[Message] = []
    file_separator: str | None = None  # set by FHS
    file_closed = False
    batches = 0
    batch_separator = "|"
    batch_open = False
    batch_messages = 0
    current: Message | None = None
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
            current = Message(number, [segment])
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


def _check_separator(segment: Segment, separator: str, declared_in: str) -> None:
    if len(segment.text) > 3 and segment.text[3] != separator:
        raise MalformedFileError(f"{segment.name}: field separator differs from {declared_in}")
