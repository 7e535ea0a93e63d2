"""Strict reader for delimited partner files: every field a string, whole-file checks first.

What a file must be, and what each failure raises (messages never quote cell values):

- Text in `fmt.encoding` (a UTF-8 BOM is dropped); invalid bytes or NUL bytes
  -> MalformedFileError with the byte offset and line.
- A header (when `fmt.header`) naming exactly the schema's columns, in any order
  -> SchemaDriftError listing missing and unknown names, or duplicates.
- RFC 4180 records (quoted fields may hold delimiters, quotes and newlines; lines
  end in \\n or \\r\\n), each with exactly one field per column -> MalformedFileError
  naming the record number (1-based data record, as in ROW_COLUMN) and its line.
- Optionally a control record before the header, '<prefix>|<sender>|…|<n>'
  (`fmt.header_record`): n must equal the data records -> TrailerMismatchError
  'header record says N rows, file has M'; another sender than the expected one
  -> MalformedFileError.
- Optionally a last record '<trailer_prefix>,<n>': n must equal the data records
  -> TrailerMismatchError 'trailer says N rows, file has M'.
- Blank lines at the very end of the file (or just before the trailer) are
  ignored; a blank line between data records is a record with one field (ragged).

Empty fields, quoted ("") or not, are read as the empty string: the parsed frame
holds no nulls, and nothing is inferred, converted or filled in. Trailing spaces and
tabs are trimmed only when the format says so (`trim_trailing_whitespace`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from batchbridge.config import FormatConfig
from batchbridge.errors import MalformedFileError, TrailerMismatchError
from batchbridge.validations.base import ROW_COLUMN, ParsedFile
from batchbridge.validations.readers.delimited_header import (
    MAX_COUNT_DIGITS,
    QUOTE,
    allow_fields_of,
    check_header,
    parse_header,
    parse_header_record,
)

UTF8_BOM = b"\xef\xbb\xbf"


def read_delimited(data: bytes, fmt: FormatConfig, columns: tuple[str, ...]) -> ParsedFile:
    """Parse one decrypted file into strings, plus the trailer's declared count.

    The frame has the schema's `columns` (in schema order, whatever the file's
    order) and ROW_COLUMN (UInt32, 1-based data record number).
    """
    delimiter = fmt.delimiter.encode("utf-8")
    if len(delimiter) != 1:
        raise MalformedFileError("the format's delimiter must be a single ASCII character")
    quoting = fmt.quoting == "rfc4180"

    prefix = 0  # bytes dropped from the front, so offsets refer to the file as received
    if fmt.encoding == "utf-8" and data.startswith(UTF8_BOM):
        prefix = len(UTF8_BOM)
    nul = data.find(b"\x00", prefix)
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise MalformedFileError(f"NUL byte at byte offset {nul} (line {line})")
    if fmt.encoding == "latin-1":
        # Every byte is valid latin-1; polars reads UTF-8, so transcode once.
        text_bytes = data.decode("latin-1").encode("utf-8")
    else:
        text_bytes = data[prefix:] if prefix else data

    if not text_bytes.strip(b"\r\n\t "):
        raise MalformedFileError("file is empty: no header and no records")

    header_declared: int | None = None
    lines_before_header = 0
    if fmt.header_record is not None:
        control_end = text_bytes.find(b"\n")
        if control_end < 0:
            control_end = len(text_bytes)
        header_declared = parse_header_record(text_bytes[:control_end], fmt)
        text_bytes = text_bytes[control_end + 1 :]
        prefix += control_end + 1
        lines_before_header = 1

    if fmt.header:
        header_end = text_bytes.find(b"\n")
        if header_end < 0:
            header_end = len(text_bytes)
        names = parse_header(text_bytes[:header_end], fmt, quoting, prefix)
        check_header(names, columns)
        body_start = header_end + 1
        lines_before_body = lines_before_header + 1
    else:
        names = list(columns)
        body_start = 0
        lines_before_body = lines_before_header

    body_end, declared = find_trailer(text_bytes, body_start, fmt, delimiter)
    body = text_bytes[body_start:body_end]
    if not body.strip(b"\r\n"):
        frame = empty_frame(columns)
    else:
        at = BodyAt(offset=prefix + body_start, lines=lines_before_body, records=0)
        frame = parse_body(body, names, fmt, quoting, delimiter, at)

    rows = frame.height
    if header_declared is not None and header_declared != rows:
        raise TrailerMismatchError(f"header record says {header_declared} rows, file has {rows}")
    if declared is not None and declared != rows:
        raise TrailerMismatchError(f"trailer says {declared} rows, file has {rows}")
    if fmt.trim_trailing_whitespace and rows:
        frame = frame.with_columns(pl.col(columns).str.strip_chars_end(" \t"))
    return ParsedFile(
        frame=frame.select(*columns, ROW_COLUMN),
        declared_count=declared if declared is not None else header_declared,
    )


def find_trailer(
    text: bytes, body_start: int, fmt: FormatConfig, delimiter: bytes
) -> tuple[int, int | None]:
    """(end of the data records, declared count or None) after dropping a trailer."""
    end = len(text)
    while end > body_start and text[end - 1] in b"\r\n":
        end -= 1  # blank lines at the end of the file carry nothing
    if fmt.trailer_prefix is None or end <= body_start:
        return end, None
    last_start = text.rfind(b"\n", body_start, end) + 1
    if last_start == 0:
        last_start = body_start
    last = text[last_start:end]
    tag = re.escape(fmt.trailer_prefix.encode("utf-8"))
    sep = re.escape(delimiter)
    # The trailer is '<prefix>,<n>'; either field may be quoted. A last record can
    # only look like this outside quotes: were it inside an open quoted field, that
    # quote would never close and the file would fail as unclosed.
    match = re.fullmatch(rb'(?:%s|"%s")%s(?:([0-9]+)|"([0-9]+)")' % (tag, tag, sep), last)
    if match:
        digits = match.group(1) or match.group(2)
        if len(digits) > MAX_COUNT_DIGITS:
            # Not a row count, and int() refuses strings past 4300 digits (ValueError).
            raise MalformedFileError(
                f"trailer count has {len(digits)} digits; that is not a row count"
            )
        count = int(digits)
        body_end = last_start
        while body_end > body_start and text[body_end - 1] in b"\r\n":
            body_end -= 1
        return body_end, count
    if re.fullmatch(rb'(?:%s|"%s")%s[^%s]*' % (tag, tag, sep, sep), last):
        raise MalformedFileError(
            f"last record looks like a trailer but is not '{fmt.trailer_prefix}"
            f"{fmt.delimiter}<count>'"
        )
    return end, None


def empty_frame(columns: tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame(schema={**{c: pl.String for c in columns}, ROW_COLUMN: pl.UInt32})


@dataclass(frozen=True)
class BodyAt:
    """Where a run of data records starts in the file as received (for messages, row numbers)."""

    offset: int
    """Bytes before it."""
    lines: int
    """Lines before it."""
    records: int
    """Data records before it."""


def parse_body(
    body: bytes, names: list[str], fmt: FormatConfig, quoting: bool, delimiter: bytes, at: BodyAt
) -> pl.DataFrame:
    """Whole data records (no header, no trailer) as strings, numbered from `at.records + 1`."""
    if quoting and body.count(QUOTE) % 2:
        # In RFC 4180 every quote opens, closes or is doubled: an odd count means
        # some quoted field never closes.
        where = _locate(body, names, fmt, quoting, at)
        raise MalformedFileError(f"unbalanced quotes{where}")
    try:
        frame = pl.read_csv(
            body,
            has_header=False,
            schema=dict.fromkeys(names, pl.String),
            separator=fmt.delimiter,
            quote_char='"' if quoting else None,
            encoding="utf8",
            empty_string_is_null=False,
            truncate_ragged_lines=False,
            raise_if_empty=False,
            comment_prefix=None,
            null_values=None,
            try_parse_dates=False,
            row_index_name=ROW_COLUMN,
            row_index_offset=at.records + 1,
        )
    except Exception:
        # polars' message can quote the offending field: replace it with ours.
        raise _diagnose(body, names, fmt, quoting, at) from None

    # polars pads a record with too few fields instead of failing (it does fail on
    # too many). Every delimiter byte is either a separator or part of a value, so
    # with no record longer than the header, the counts balance only when every
    # record has exactly len(names) fields.
    separators = body.count(delimiter)
    in_values = frame.select(
        pl.sum_horizontal(pl.col(names).str.count_matches(fmt.delimiter, literal=True)).sum()
    ).item()
    if separators != (len(names) - 1) * frame.height + (in_values or 0):
        where = _locate(body, names, fmt, quoting, at)
        raise MalformedFileError(f"record with the wrong number of fields{where}")
    return frame


def _diagnose(
    body: bytes, names: list[str], fmt: FormatConfig, quoting: bool, at: BodyAt
) -> MalformedFileError:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if fmt.encoding == "utf-8":
            offset = at.offset + exc.start
            line = at.lines + body.count(b"\n", 0, exc.start) + 1
            return MalformedFileError(f"not valid UTF-8 at byte offset {offset} (line {line})")
        return MalformedFileError("not valid text after transcoding")
    where = _locate(body, names, fmt, quoting, at)
    return MalformedFileError(f"not valid delimited text (quoting or field count){where}")


def _locate(body: bytes, names: list[str], fmt: FormatConfig, quoting: bool, at: BodyAt) -> str:
    """' in record N (line L): …' for the first broken record, found the slow way.

    Only runs once a file has already failed, so a pure-Python pass is affordable.
    Python's csv module finds wrong field counts and broken quoted fields; it reads a
    quote inside an unquoted field as text, so records holding a quote are also
    matched against a strict RFC 4180 pattern.
    """
    text = body.decode("utf-8", errors="replace")
    record_lines: list[str] = []

    def lines() -> Iterator[str]:
        for line in io.StringIO(text, newline=""):
            record_lines.append(line)
            yield line

    allow_fields_of(len(body))
    reader = csv.reader(
        lines(),
        delimiter=fmt.delimiter,
        quotechar='"',
        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
        strict=True,
    )
    sep = re.escape(fmt.delimiter)
    field = rf'(?:"(?:[^"]|"")*"|[^"{sep}\r\n]*)'
    strict_record = re.compile(rf"{field}(?:{sep}{field})*")
    record = 0
    line = 0
    while True:
        start_line = line + 1
        where = f" in record {at.records + record + 1} (line {at.lines + start_line})"
        try:
            fields = next(reader)
        except StopIteration:
            return ""
        except csv.Error:
            return f"{where}: quoting is broken"
        line = reader.line_num
        record += 1
        raw = "".join(record_lines).removesuffix("\n").removesuffix("\r")
        record_lines.clear()
        if len(fields) != len(names):
            return f"{where}: {len(fields)} fields, expected {len(names)}"
        if quoting and '"' in raw and not strict_record.fullmatch(raw):
            return f"{where}: quote inside an unquoted field"
