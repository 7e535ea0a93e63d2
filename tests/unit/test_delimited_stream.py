"""The streamed delimited reader gives what the whole-file reader gives, in chunks of any size."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchbridge.config import FormatConfig
from batchbridge.config.sections import HeaderRecordConfig
from batchbridge.errors import FileRejectedError, MalformedFileError, TrailerMismatchError
from batchbridge.validations.base import ROW_COLUMN
from batchbridge.validations.readers.delimited import read_delimited
from batchbridge.validations.readers.delimited_stream import DelimitedChunks, record_cut

COLUMNS = ("id", "name", "code")


def blocks_of(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def streamed(
    data: bytes, fmt: FormatConfig, *, block: int, chunk: int
) -> tuple[pl.DataFrame, int | None, int]:
    reader = DelimitedChunks(blocks_of(data, block), fmt, COLUMNS, chunk_bytes=chunk)
    frames = list(reader)
    frame = pl.concat(frames) if frames else read_delimited(b"id,name,code\n", FMT, COLUMNS).frame
    return frame, reader.declared_count, len(frames)


def outcome(run: object) -> tuple[str, object]:
    """('ok', value) or (error class name, message): what a reader call came to."""
    try:
        return "ok", run()  # type: ignore[operator]
    except FileRejectedError as exc:
        return type(exc).__name__, str(exc)


FMT = FormatConfig()
field = st.text(alphabet='ab ,"\n\r\té€1', max_size=6)


def render(value: str, quoting: bool) -> str:
    if quoting and any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value.replace(",", "").replace('"', "").replace("\n", "").replace("\r", "")


@st.composite
def files(draw: st.DrawFn) -> tuple[bytes, FormatConfig]:
    quoting = draw(st.booleans())
    trim = draw(st.booleans())
    latin = draw(st.booleans())
    header_record = draw(st.booleans())
    fmt = FormatConfig(
        quoting="rfc4180" if quoting else "none",
        encoding="latin-1" if latin else "utf-8",
        trim_trailing_whitespace=trim,
        header_record=HeaderRecordConfig(prefix="HDR", expected_sender="ACME")
        if header_record
        else None,
    )
    records = draw(st.lists(st.tuples(field, field, field), max_size=12))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines = [",".join(render(v, quoting) for v in record) for record in records]
    text = newline.join(["id,name,code", *lines]) + newline
    count = len(records) + draw(st.sampled_from([0, 0, 0, 1]))
    if draw(st.booleans()):
        text += f"TRAILER,{count}{newline}"
    text += draw(st.sampled_from(["", newline, newline * 3]))
    if header_record:
        text = f"HDR,ACME,20261203,{count}{newline}" + text
    encoded = text.encode("latin-1", errors="replace") if latin else text.encode()
    if not latin and draw(st.booleans()):
        encoded = b"\xef\xbb\xbf" + encoded
    if draw(st.integers(0, 9)) == 0:  # one fault somewhere: a NUL or a stray byte
        spot = draw(st.integers(0, max(0, len(encoded) - 1)))
        encoded = encoded[:spot] + draw(st.sampled_from([b"\x00", b"\xff", b'"'])) + encoded[spot:]
    return encoded, fmt


@settings(max_examples=400, deadline=None)
@given(files(), st.integers(1, 64), st.integers(1, 96))
def test_any_blocks_and_chunks_read_like_the_whole_file(
    case: tuple[bytes, FormatConfig], block: int, chunk: int
) -> None:
    data, fmt = case
    whole = outcome(lambda: read_delimited(data, fmt, COLUMNS))
    parts = outcome(lambda: streamed(data, fmt, block=block, chunk=chunk))
    if whole[0] == "ok" and parts[0] == "ok":
        parsed = whole[1]
        frame, declared, _chunks = parts[1]  # type: ignore[misc]
        assert frame.to_dicts() == parsed.frame.to_dicts()  # type: ignore[attr-defined]
        assert frame.schema == parsed.frame.schema  # type: ignore[attr-defined]
        assert declared == parsed.declared_count  # type: ignore[attr-defined]
    else:
        # Both refuse the file; with more than one break, each may name a different one.
        assert whole[0] != "ok" and parts[0] != "ok", (whole, parts)


def test_chunks_are_numbered_on_and_the_trailer_is_checked_at_the_end() -> None:
    body = "".join(f"{i},name {i},C\n" for i in range(1, 1001))
    data = f"id,name,code\n{body}TRAILER,1000\n".encode()
    reader = DelimitedChunks(blocks_of(data, 1024), FMT, COLUMNS, chunk_bytes=2048)
    frames = list(reader)
    assert len(frames) > 5
    assert pl.concat(frames)[ROW_COLUMN].to_list() == list(range(1, 1001))
    assert (reader.rows_read, reader.declared_count) == (1000, 1000)


def test_a_trailer_mismatch_is_found_after_many_chunks() -> None:
    body = "".join(f"{i},n,C\n" for i in range(1, 2001))
    data = f"id,name,code\n{body}TRAILER,1999\n".encode()
    reader = DelimitedChunks(blocks_of(data, 1000), FMT, COLUMNS, chunk_bytes=1000)
    seen = 0
    with pytest.raises(TrailerMismatchError, match="trailer says 1999 rows, file has 2000"):
        for frame in reader:
            seen += frame.height
    assert seen > 1000  # rows went by before the end said the file is wrong


def test_errors_name_the_record_and_line_in_the_whole_file() -> None:
    body = "".join(f"{i},n,C\n" for i in range(1, 501))
    data = f"id,name,code\n{body}501,n\n".encode()
    whole = outcome(lambda: read_delimited(data, FMT, COLUMNS))
    parts = outcome(lambda: streamed(data, FMT, block=300, chunk=500))
    assert parts == whole
    assert whole[0] == "MalformedFileError" and "record 501 (line 502)" in str(whole[1])


def test_a_quoted_newline_is_never_a_chunk_boundary() -> None:
    records = [f'{i},"two\nlines, {i}",C' for i in range(1, 200)]
    data = ("id,name,code\n" + "\n".join(records) + "\n").encode()
    frame, _, chunks = streamed(data, FMT, block=7, chunk=64)
    assert chunks > 10
    assert frame["name"].to_list() == [f"two\nlines, {i}" for i in range(1, 200)]


def test_record_cut_keeps_the_last_record_back() -> None:
    assert record_cut(b"a\nb\nc", quoting=True) == 4
    assert record_cut(b"a\nb\nc\n", quoting=True) == 4
    assert record_cut(b'a\n"b\nc"\n', quoting=True) == 2
    assert record_cut(b"a\nb\n\n\n", quoting=True) == 2
    assert record_cut(b"abc", quoting=True) == 0


def test_an_empty_stream_is_an_empty_file() -> None:
    with pytest.raises(MalformedFileError, match="file is empty"):
        list(DelimitedChunks(iter([b"", b"\n "]), FMT, COLUMNS))
