"""HL7 v2 text to a frame of segments, checking the FHS/BHS … BTS/FTS envelope and counts.

Part of the hl7v2 reader (its module docstring says what a file must be). Messages name
segment numbers and standard segment ids, never a value.

The segments are a Polars frame, not a Python object each: a 100,000-OBX file has some
350,000 segments, and only the envelope's few (FHS, BHS, BTS, FTS, and one MSH per
message) need the sequential walk that checks them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import polars as pl

from batchbridge.config import Hl7v2FormatConfig
from batchbridge.errors import MalformedFileError, TrailerMismatchError

UTF8_BOM = b"\xef\xbb\xbf"
ENVELOPE_IDS = ("FHS", "FTS", "BHS", "BTS", "MSH")
"""Segments that open or close a file, batch or message: the ones the walk checks."""

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
    """One non-blank segment of the file, as text (only the envelope walk makes these)."""

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


def split_segments(text: str) -> pl.DataFrame:
    """The non-blank segments, whatever the line ends (CR, CRLF, LF): columns number
    (UInt32, from 1), text and id (its first three characters)."""
    # Two replaces and one split in C are the same cut as the regex \r\n|\r|\n (CRLF is
    # taken first, so it stays one end) at a fraction of its cost on a large file; a file
    # of CR ends only (the standard) is split as it is, without a copy of its text.
    if "\n" in text:
        pieces = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    else:
        pieces = text.split("\r")
    return (
        pl.DataFrame({"text": pieces}, schema={"text": pl.String})
        .filter(pl.col("text").str.strip_chars(" \t") != "")
        .with_row_index("number", offset=1)
        .with_columns(id=pl.col("text").str.slice(0, 3))
    )


def message_segments(segments: pl.DataFrame, fmt: Hl7v2FormatConfig) -> pl.DataFrame:
    """Check the envelope, then give the segments of the messages, each with `msg` (its
    message's number, from 1): columns number, text, id, msg.

    The walk that raises sees the envelope segments and, of the others, a superset of those
    that could fail (a bad id, outside any message, a different field separator), found
    for all segments at once; a segment it skips could not have changed its state.
    """
    text, kind = pl.col("text"), pl.col("id")
    envelope = kind.is_in(ENVELOPE_IDS)
    separator = text.str.slice(3, 1)
    last_envelope = pl.when(envelope).then(kind).forward_fill()
    message_separator = pl.when(kind == "MSH").then(separator).forward_fill()
    suspect = (
        ~text.str.contains(r"^[A-Z][A-Z0-9]{2}")
        | (last_envelope != "MSH")
        | (separator != message_separator)
    ).fill_null(True)
    marked = segments.with_columns(
        msg=(kind == "MSH").cum_sum().cast(pl.UInt32),
        walk=envelope | suspect,
    )
    walked = marked.filter("walk").select("number", "text")
    _walk((Segment(number, text) for number, text in walked.iter_rows()), fmt)
    return marked.filter(~envelope | (kind == "MSH")).select("number", "text", "id", "msg")


def _header_separator(segment: Segment, what: str) -> str:
    """The field separator an MSH/BHS/FHS declares, after checking its encoding characters."""
    text = segment.text
    separator = text[3:4]
    end = text.find(separator, 4) if separator else -1
    encoding = text[4:end] if end >= 0 else text[4:]
    if not separator or not _valid_delimiters(separator + encoding):
        raise MalformedFileError(
            f"{what} (segment {segment.number}): {segment.id}-1/{segment.id}-2 encoding "
            "characters are missing or invalid"
        )
    return separator


@lru_cache(maxsize=256)
def _valid_delimiters(delimiters: str) -> bool:
    """Whether MSH-1 + MSH-2 (or BHS/FHS) are usable: cached, as every MSH repeats them."""
    return (
        len(delimiters) in (5, 6)
        and len(set(delimiters)) == len(delimiters)
        and delimiters.isprintable()
        and not any(ch.isalnum() or ch.isspace() for ch in delimiters)
    )


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


def _walk(segments: Iterable[Segment], fmt: Hl7v2FormatConfig) -> None:
    """Walk the segments in file order, checking FHS/BHS/BTS/FTS, their counts, and that
    every other segment sits in a message with its field separator."""
    messages = 0
    file_separator: str | None = None  # set by FHS
    file_closed = False
    batches = 0
    batch_separator = "|"
    batch_open = False
    batch_messages = 0
    current: int | None = None  # the number of the message segments go into
    current_separator = "|"

    for segment in segments:
        where = f"segment {segment.number}"
        if file_closed:
            raise MalformedFileError(f"{where}: segments after FTS")
        kind = segment.id
        if not _SEGMENT_ID.fullmatch(kind):
            raise MalformedFileError(f"{where}: does not start with a segment id")
        if kind == "FHS":
            if segment.number != 1:
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
            messages += 1
            if not batch_open and fmt.require_batch_envelope:
                raise MalformedFileError(
                    f"message {messages} ({where}) is not inside a batch (BHS … BTS), "
                    "which this feed requires"
                )
            current_separator = _header_separator(segment, f"message {messages}")
            current = messages
            if batch_open:
                batch_messages += 1
        else:
            if current is None:
                raise MalformedFileError(f"{segment.name} is outside any message")
            _check_separator(segment, current_separator, f"MSH-1 of message {current}")

    if batch_open:
        raise MalformedFileError(f"batch {batches} has no BTS (file truncated?)")
    if file_separator is not None and not file_closed:
        raise MalformedFileError("the file has FHS but no FTS (file truncated?)")
    if fmt.require_batch_envelope and not batches:
        raise MalformedFileError("no batch envelope: the file has no BHS … BTS")


def _check_separator(segment: Segment, separator: str, declared_in: str) -> None:
    if len(segment.text) > 3 and segment.text[3] != separator:
        raise MalformedFileError(f"{segment.name}: field separator differs from {declared_in}")
