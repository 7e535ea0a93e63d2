"""A file streamed through parse, validate and transform in chunks, every file-level rule kept.

`stream_file` reads the plaintext blocks of one file (`PlaintextSource`: a decryptor's
stream), parses them in chunks of records (delimited files; other formats are read
whole, as one chunk), validates each chunk with the feed's schema and transforms its
valid rows into `TransformedRows`. The plaintext is never held whole.

What a whole file guarantees, a streamed one keeps:
- The header/trailer counts are checked at the end (the reader raises there), before
  anything of the file can be loaded: loading starts only after `stream_file` returned.
- A parse error is reported only after the signature was judged: a file whose signature
  fails says so, whatever its content looks like.
- Every row of a natural key that occurs more than once is quarantined with
  `<key>:unique`, even when the copies are in different chunks. Rows whose key hash an
  earlier chunk had are held back; from the first such chunk on, the raw rows are kept
  (`RawTail`, encrypted). At the end, if there were any, every row of those keys is
  found again, to count them exactly (a hash collision never quarantines a row) and to
  fetch the earlier copies, which were valid and transformed already: they move to the
  quarantine and their transformed rows are dropped. Rows before the tail come from a
  second read of the file that stops where the tail starts.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import polars as pl

from batchbridge import progress
from batchbridge.config import AnyFormatConfig, FormatConfig
from batchbridge.crashpoints import crash_point
from batchbridge.errors import FileRejectedError
from batchbridge.validations.base import REASONS_COLUMN, ROW_COLUMN, FeedSchema, ValidationContext
from batchbridge.validations.formats import read_plaintext
from batchbridge.validations.keys_seen import KeysSeen, key_hashes
from batchbridge.validations.readers.delimited_stream import (
    CHUNK_BYTES,
    BodyParser,
    DelimitedChunks,
)
from batchbridge.validations.repeated_keys import RawTail, rows_with_keys
from batchbridge.validations.spill import EncryptedSpill
from batchbridge.validations.transformed_rows import RowSink, TransformedRows, compacted


class PlaintextSource(Protocol):
    """A decrypted message block by block, then who signed it (connectors.pgp's streams)."""

    def blocks(self) -> Iterator[bytes]: ...

    def verified(self) -> tuple[str, datetime | None]: ...


OpenPlaintext = Callable[[], AbstractContextManager[PlaintextSource]]
"""Opens the file's plaintext again from the start (the second read needs it)."""


@dataclass
class StageSeconds:
    """Seconds spent in each part of the streamed stages, summed over the chunks."""

    decrypt: float = 0.0
    parse: float = 0.0
    """Cutting and parsing chunks, and the second read for repeated keys."""
    validate: float = 0.0
    transform: float = 0.0


@dataclass
class StreamedFile:
    """What streaming one file came to: counts, quarantined rows, transformed rows, signer."""

    rows_read: int
    rows_declared: int | None
    quarantined: pl.DataFrame
    transformed: TransformedRows
    signer_fingerprint: str
    signed_at: datetime | None
    seconds: StageSeconds = field(default_factory=StageSeconds)

    @property
    def rows_valid(self) -> int:
        return self.rows_read - self.quarantined.height


def _timed_blocks(blocks: Iterable[bytes], seconds: StageSeconds) -> Iterator[bytes]:
    iterator = iter(blocks)
    while True:
        started = time.perf_counter()
        block = next(iterator, None)
        seconds.decrypt += time.perf_counter() - started
        if block is None:
            return
        yield block


def _timed_chunks(chunks: Iterable[pl.DataFrame], seconds: StageSeconds) -> Iterator[pl.DataFrame]:
    """`chunks`, the time spent making each one counted as parse (less the wait on gpg)."""
    iterator = iter(chunks)
    while True:
        started, waited = time.perf_counter(), seconds.decrypt
        chunk = next(iterator, None)
        seconds.parse += time.perf_counter() - started - (seconds.decrypt - waited)
        if chunk is None:
            return
        yield chunk


class _Chunks:
    """Parsed chunks of a file in any format, and its counts once they are all read."""

    def __init__(
        self,
        blocks: Iterable[bytes],
        fmt: AnyFormatConfig,
        columns: tuple[str, ...],
        size: int,
        parse: BodyParser | None = None,
    ) -> None:
        self._delimited = (
            DelimitedChunks(blocks, fmt, columns, chunk_bytes=size, parse=parse)
            if isinstance(fmt, FormatConfig)
            else None
        )
        self._blocks, self._fmt, self._columns = blocks, fmt, columns
        self.rows_read = 0
        self.declared_count: int | None = None

    @property
    def records_so_far(self) -> int:
        """Data records parsed so far (all of them, once the iteration ended)."""
        return self._delimited.rows_read if self._delimited is not None else self.rows_read

    def __iter__(self) -> Iterator[pl.DataFrame]:
        if self._delimited is not None:
            yield from self._delimited
            self.rows_read = self._delimited.rows_read
            self.declared_count = self._delimited.declared_count
            return
        # Formats without a chunked reader (HL7 v2) are read whole.
        parsed = read_plaintext(b"".join(self._blocks), self._fmt, self._columns)
        self.rows_read, self.declared_count = parsed.rows_read, parsed.declared_count
        yield parsed.frame


def stream_file(
    open_plaintext: OpenPlaintext,
    fmt: AnyFormatConfig,
    schema: FeedSchema,
    ctx: ValidationContext,
    transform: Callable[[pl.DataFrame], pl.DataFrame],
    *,
    chunk_bytes: int = CHUNK_BYTES,
    spill_path: Path | None = None,
    sinks: Sequence[RowSink] = (),
    replay: bool = False,
) -> StreamedFile:
    """Parse, validate and transform one file chunk by chunk (see the module docstring).

    With `spill_path`, the transformed rows wait there encrypted (validations.spill);
    the caller closes `StreamedFile.transformed` when the load is done. `sinks` are
    offered each transformed chunk as it is made (targets' early stages). With `replay`
    the rows are not kept at all: when the sinks took them all, they are needed again
    only if a sink failed, and are then made again from the file (`replayed_rows`).
    """
    spill = EncryptedSpill(spill_path) if spill_path is not None and not replay else None
    shape = transform(_concat([], schema, with_reasons=False))
    transformed = TransformedRows(schema.natural_key[0], shape, spill, sinks, replay=replay)
    try:
        with RawTail(None if spill_path is None else spill_path.with_suffix(".raw")) as tail:
            streamed = _stream(
                open_plaintext, fmt, schema, ctx, transform,
                transformed=transformed, chunk_bytes=chunk_bytes, raw_tail=tail,
            )  # fmt: skip
    except BaseException:
        transformed.close()
        raise
    if replay:
        again = functools.partial(
            replayed_rows, open_plaintext, fmt, schema, ctx, transform,
            chunk_bytes=chunk_bytes, quarantined=streamed.quarantined.get_column(ROW_COLUMN),
        )  # fmt: skip
        transformed.replay_with(again)
    return streamed


def replayed_rows(
    open_plaintext: OpenPlaintext,
    fmt: AnyFormatConfig,
    schema: FeedSchema,
    ctx: ValidationContext,
    transform: Callable[[pl.DataFrame], pl.DataFrame],
    *,
    chunk_bytes: int,
    quarantined: pl.Series,
) -> Iterator[pl.DataFrame]:
    """A streamed file's transformed rows made again: every valid row not `quarantined`.

    Chunks may fall differently from the first read; the rows do not: a row is valid
    on its own, or by its key being unique in the whole file, and every row whose key
    repeats is among the quarantined ones the first read found.
    """
    with open_plaintext() as source:
        for raw in _Chunks(source.blocks(), fmt, schema.columns, chunk_bytes):
            valid = schema.validate(raw, ctx).valid
            valid = valid.filter(~pl.col(ROW_COLUMN).is_in(quarantined))
            if valid.height:
                yield transform(valid)
        source.verified()


def _stream(
    open_plaintext: OpenPlaintext,
    fmt: AnyFormatConfig,
    schema: FeedSchema,
    ctx: ValidationContext,
    transform: Callable[[pl.DataFrame], pl.DataFrame],
    *,
    transformed: TransformedRows,
    chunk_bytes: int,
    raw_tail: RawTail,
) -> StreamedFile:
    key = schema.natural_key[0]
    seconds = StageSeconds()
    seen = KeysSeen()
    quarantined: list[pl.DataFrame] = []
    held: list[pl.DataFrame] = []  # valid rows whose key an earlier chunk may have had
    suspects: set[str] = set()
    with open_plaintext() as source:
        chunks = _Chunks(_timed_blocks(source.blocks(), seconds), fmt, schema.columns, chunk_bytes)
        try:
            for raw in _timed_chunks(chunks, seconds):
                crash_point("after_parse")
                progress.advance(raw.height)
                started = time.perf_counter()
                result = schema.validate(raw, ctx)
                valid_hashes = key_hashes(result.valid.get_column(key))
                quarantined_hashes = key_hashes(result.quarantined.get_column(key))
                repeated = seen.seen(valid_hashes)
                for frame, mask in (
                    (result.valid, repeated),
                    (result.quarantined, seen.seen(quarantined_hashes)),
                ):
                    suspects.update(_keys(frame.filter(mask), key))
                seen.add(valid_hashes)
                seen.add(quarantined_hashes)
                if suspects:
                    raw_tail.keep(raw)  # from the first chunk that repeats a key on
                del raw
                held.append(compacted(result.valid.filter(repeated)))
                quarantined.append(compacted(result.quarantined))
                valid = result.valid.filter(~repeated)
                seconds.validate += time.perf_counter() - started
                started = time.perf_counter()
                if valid.height:
                    transformed.append(transform(valid))
                seconds.transform += time.perf_counter() - started
                crash_point("mid_stream")
        except FileRejectedError:
            source.verified()  # a failed signature is the better reason
            raise
        signer, signed_at = source.verified()
    all_quarantined = _concat(quarantined, schema, with_reasons=True)
    all_held = _concat(held, schema, with_reasons=False)
    if suspects:
        started = time.perf_counter()
        all_quarantined = _settle_repeated_keys(
            open_plaintext, fmt, schema, transform,
            key=key, suspects=suspects, quarantined=all_quarantined, held=all_held,
            transformed=transformed, chunk_bytes=chunk_bytes, raw_tail=raw_tail,
        )  # fmt: skip
        seconds.parse += time.perf_counter() - started
    return StreamedFile(
        rows_read=chunks.rows_read,
        rows_declared=chunks.declared_count,
        quarantined=all_quarantined.sort(ROW_COLUMN),
        transformed=transformed,
        signer_fingerprint=signer,
        signed_at=signed_at,
        seconds=seconds,
    )


def _keys(frame: pl.DataFrame, key: str) -> list[str]:
    values = frame.get_column(key).str.strip_chars()
    return [value for value in values.to_list() if value]


def _concat(frames: list[pl.DataFrame], schema: FeedSchema, *, with_reasons: bool) -> pl.DataFrame:
    shape: dict[str, pl.DataType | type[pl.DataType]] = dict.fromkeys(schema.columns, pl.String)
    shape[ROW_COLUMN] = pl.UInt32
    if with_reasons:
        shape[REASONS_COLUMN] = pl.List(pl.String)
    kept = [frame.select(list(shape)) for frame in frames if frame.height]
    return pl.concat(kept) if kept else pl.DataFrame(schema=shape)


def _settle_repeated_keys(
    open_plaintext: OpenPlaintext,
    fmt: AnyFormatConfig,
    schema: FeedSchema,
    transform: Callable[[pl.DataFrame], pl.DataFrame],
    *,
    key: str,
    suspects: set[str],
    quarantined: pl.DataFrame,
    held: pl.DataFrame,
    transformed: TransformedRows,
    chunk_bytes: int,
    raw_tail: RawTail,
) -> pl.DataFrame:
    """Count the suspected keys exactly; quarantine every copy of a repeat.

    Every row of a suspected key is found again: those before the raw tail by a second
    read of the file, which stops where the tail starts; the others in the tail.
    Returns the quarantined rows with the repeats added; held rows whose key turns out
    unique after all (a hash collision) are transformed like any valid row.
    """
    rows_of_suspects: list[pl.DataFrame] = []
    is_suspect = pl.col(key).str.strip_chars().is_in(suspects)
    tail_from = raw_tail.first_row
    assert tail_from is not None  # the chunk that found the first suspect is kept
    if tail_from > 1:
        parse = rows_with_keys(fmt, key, suspects) if isinstance(fmt, FormatConfig) else None
        with open_plaintext() as source:
            chunks = _Chunks(source.blocks(), fmt, schema.columns, chunk_bytes, parse)
            for raw in chunks:
                before = raw.filter(is_suspect & (pl.col(ROW_COLUMN) < tail_from))
                rows_of_suspects.append(compacted(before))
                if chunks.records_so_far >= tail_from - 1:
                    # The first read judged these same bytes whole; the rest is in the tail.
                    break
    for raw in raw_tail.frames():
        rows_of_suspects.append(compacted(raw.filter(is_suspect)))
    candidates = _concat(rows_of_suspects, schema, with_reasons=False)
    trimmed = candidates.get_column(key).str.strip_chars()
    counts = trimmed.value_counts()
    repeated = set(counts.filter(pl.col("count") > 1).get_column(key).to_list())
    reason = f"{key}:unique"

    def is_repeated(frame: pl.DataFrame) -> pl.Series:
        return frame.get_column(key).str.strip_chars().is_in(repeated)

    # Rows quarantined for other reasons that repeat a key: add the reason once.
    quarantined = quarantined.with_columns(
        pl.when(is_repeated(quarantined) & ~pl.col(REASONS_COLUMN).list.contains(reason))
        .then(pl.col(REASONS_COLUMN).list.concat(pl.lit([reason])))
        .otherwise(pl.col(REASONS_COLUMN))
        .alias(REASONS_COLUMN)
    )
    # Every other copy (held back, or valid and transformed earlier) joins the quarantine.
    already = set(quarantined.get_column(ROW_COLUMN).to_list())
    copies = candidates.filter(is_repeated(candidates) & ~pl.col(ROW_COLUMN).is_in(already))
    copies = copies.with_columns(pl.lit([reason]).alias(REASONS_COLUMN))
    held_repeated = held.filter(is_repeated(held)).height  # never transformed
    transformed.drop_keys(repeated, rows=copies.height - held_repeated)
    unique_after_all = held.filter(~is_repeated(held))
    if unique_after_all.height:
        transformed.append(transform(unique_after_all))
    return pl.concat([quarantined, copies.select(quarantined.columns)])
