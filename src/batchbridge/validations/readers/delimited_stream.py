"""The delimited reader over a stream of plaintext blocks: the same rules, in chunks of records.

`DelimitedChunks(blocks, fmt, columns)` yields frames of whole data records, each
numbered on from the last (ROW_COLUMN), as the blocks arrive; the plaintext is never
held whole. Every rule of delimited.py holds, with the same messages, byte offsets and
line numbers (the helpers are shared): header record, header, quoting, field counts,
NUL bytes, encoding, trailer. Where a file breaks more than one rule, the first break in
file order is reported (the whole-file reader checks NUL bytes and the trailer first).

Chunks end where a record ends: after a newline outside quotes (an even number of
quotes before it) that a non-blank line follows. The last record and any blank lines
after it stay behind until the stream ends, because only then is it known whether that
record is the trailer. `declared_count` and `rows_read` are set once iteration is done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import polars as pl

from batchbridge.config import FormatConfig
from batchbridge.errors import MalformedFileError, TrailerMismatchError
from batchbridge.validations.base import ROW_COLUMN
from batchbridge.validations.readers.delimited import (
    UTF8_BOM,
    BodyAt,
    find_trailer,
    parse_body,
)
from batchbridge.validations.readers.delimited_header import (
    QUOTE,
    check_header,
    parse_header,
    parse_header_record,
)

CHUNK_BYTES = 8 * 1024 * 1024
"""Plaintext bytes per parsed chunk (about 50,000 lab records; config.settings sets it)."""


def record_cut(buf: bytes | bytearray, quoting: bool) -> int:
    """The last offset in `buf` where a non-blank record starts outside quotes (0: none).

    Everything before it is whole records; from it on is held back (the last record,
    which may be the trailer or still incomplete).
    """
    quotes_after = 0
    end = len(buf)
    total = buf.count(QUOTE) if quoting else 0
    while True:
        newline = buf.rfind(b"\n", 0, end)
        if newline < 0:
            return 0
        cut = newline + 1
        if quoting:
            quotes_after += buf.count(QUOTE, cut, end)
        end = newline
        if cut >= len(buf) or buf[cut] in b"\r\n":
            continue
        if not quoting or (total - quotes_after) % 2 == 0:
            return cut


BodyParser = Callable[[bytes, list[str], BodyAt], tuple[pl.DataFrame, int]]
"""Parses whole records (UTF-8, the file's column names, where they start): the frame
to yield and how many records the body held (the frame may keep fewer)."""


class DelimitedChunks:
    """Iterate parsed chunks of a delimited file from its plaintext blocks (see module).

    `parse` replaces the strict record parser, e.g. for a second read of a file already
    read strictly once, which needs a few rows only (validations.stream).
    """

    def __init__(
        self,
        blocks: Iterable[bytes],
        fmt: FormatConfig,
        columns: tuple[str, ...],
        *,
        chunk_bytes: int = CHUNK_BYTES,
        parse: BodyParser | None = None,
    ) -> None:
        if len(fmt.delimiter.encode("utf-8")) != 1:
            raise MalformedFileError("the format's delimiter must be a single ASCII character")
        self._blocks = blocks
        self._fmt = fmt
        self._columns = columns
        self._chunk_bytes = max(1, chunk_bytes)
        self._quoting = fmt.quoting == "rfc4180"
        self._delimiter = fmt.delimiter.encode("utf-8")
        self._names: list[str] | None = None
        self._bom_checked = False
        self._parse = parse or self._parse_strictly
        self._header_declared: int | None = None
        self._offset = 0  # bytes of the file (as received) before the buffer
        self._lines = 0  # lines before the buffer
        self.rows_read = 0
        self.declared_count: int | None = None

    def __iter__(self) -> Iterator[pl.DataFrame]:
        buf = bytearray()
        for block in self._blocks:
            buf += block
            if self._names is None:
                if not self._preamble_ready(buf):
                    continue
                self._read_preamble(buf)
            if len(buf) >= self._chunk_bytes:
                cut = record_cut(buf, self._quoting)
                if cut:
                    yield from self._emit(bytes(buf[:cut]))
                    del buf[:cut]
        if self._names is None:
            self._strip_bom(buf)
            if not buf.strip(b"\r\n\t "):
                raise MalformedFileError("file is empty: no header and no records")
            self._read_preamble(buf)
        yield from self._finish(bytes(buf))

    # -- the parts of the file ----------------------------------------------------------

    def _strip_bom(self, buf: bytearray) -> None:
        if not self._bom_checked and self._fmt.encoding == "utf-8" and buf.startswith(UTF8_BOM):
            del buf[: len(UTF8_BOM)]
            self._offset = len(UTF8_BOM)
        self._bom_checked = True

    def _preamble_ready(self, buf: bytearray) -> bool:
        """Whether the header record and header lines are whole (and something is there)."""
        if not self._bom_checked:
            if len(buf) < len(UTF8_BOM):
                return False
            self._strip_bom(buf)
        needed = (self._fmt.header_record is not None) + self._fmt.header
        return bool(buf.strip(b"\r\n\t ")) and buf.count(b"\n") >= needed

    def _read_preamble(self, buf: bytearray) -> None:
        """Read the header record and the header (their lines are whole, or the file ended)."""
        fmt = self._fmt
        needed = (fmt.header_record is not None) + fmt.header
        self._check_text(bytes(buf[: self._line_end(buf, needed)]))
        if fmt.header_record is not None:
            end = self._line_end(buf, 1)
            self._header_declared = parse_header_record(self._text(bytes(buf[:end])), fmt)
            self._consume(buf, min(len(buf), end + 1))
        if fmt.header:
            end = self._line_end(buf, 1)
            names = parse_header(self._text(bytes(buf[:end])), fmt, self._quoting, self._offset)
            check_header(names, self._columns)
            self._consume(buf, min(len(buf), end + 1))
            self._names = names
        else:
            self._names = list(self._columns)

    @staticmethod
    def _line_end(buf: bytearray, lines: int) -> int:
        end = -1
        for _ in range(lines):
            found = buf.find(b"\n", end + 1)
            if found < 0:
                return len(buf)
            end = found
        return max(end, 0)

    def _consume(self, buf: bytearray, count: int) -> None:
        self._lines += buf.count(b"\n", 0, count)
        self._offset += count
        del buf[:count]

    def _emit(self, body: bytes) -> Iterator[pl.DataFrame]:
        """Parse whole records `body`, which start at the current offset."""
        at = BodyAt(offset=self._offset, lines=self._lines, records=self.rows_read)
        self._offset += len(body)
        self._lines += body.count(b"\n")
        self._check_text(body, at)
        if not body.strip(b"\r\n"):
            return
        assert self._names is not None
        frame, records = self._parse(self._text(body), self._names, at)
        self.rows_read += records
        if self._fmt.trim_trailing_whitespace and frame.height:
            frame = frame.with_columns(pl.col(self._columns).str.strip_chars_end(" \t"))
        yield frame.select(*self._columns, ROW_COLUMN)

    def _finish(self, tail: bytes) -> Iterator[pl.DataFrame]:
        """The held-back end of the file: the last records, then the trailer checks."""
        self._check_text(tail)
        # The trailer is ASCII, so raw latin-1 bytes split where their transcoding would.
        body_end, declared = find_trailer(tail, 0, self._fmt, self._delimiter)
        yield from self._emit(tail[:body_end])
        rows = self.rows_read
        if self._header_declared is not None and self._header_declared != rows:
            raise TrailerMismatchError(
                f"header record says {self._header_declared} rows, file has {rows}"
            )
        if declared is not None and declared != rows:
            raise TrailerMismatchError(f"trailer says {declared} rows, file has {rows}")
        self.declared_count = declared if declared is not None else self._header_declared

    def _parse_strictly(
        self, body: bytes, names: list[str], at: BodyAt
    ) -> tuple[pl.DataFrame, int]:
        frame = parse_body(body, names, self._fmt, self._quoting, self._delimiter, at)
        return frame, frame.height

    # -- bytes ----------------------------------------------------------------------------

    def _check_text(self, data: bytes, at: BodyAt | None = None) -> None:
        nul = data.find(b"\x00")
        if nul >= 0:
            offset = (at.offset if at else self._offset) + nul
            line = (at.lines if at else self._lines) + data.count(b"\n", 0, nul) + 1
            raise MalformedFileError(f"NUL byte at byte offset {offset} (line {line})")

    def _text(self, data: bytes) -> bytes:
        """`data` as UTF-8 (latin-1 files are transcoded; polars reads UTF-8)."""
        if self._fmt.encoding == "latin-1":
            return data.decode("latin-1").encode("utf-8")
        return data
