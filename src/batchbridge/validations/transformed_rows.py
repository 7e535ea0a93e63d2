"""A streamed file's transformed rows (in memory or in an encrypted spill), and frame compaction."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import polars as pl

from batchbridge.validations.spill import EncryptedSpill


class RowSink(Protocol):
    """Something that takes a file's transformed rows as they are made (a target's early stage)."""

    def offer(self, frame: pl.DataFrame) -> None:
        """A chunk of transformed rows, in the order they were made."""
        ...

    def drop_keys(self, keys: Iterable[str]) -> None:
        """Rows offered earlier with these (trimmed) keys must be left out after all."""
        ...

    def close(self) -> None:
        """The rows are done with (loaded or abandoned)."""
        ...


class TransformedRows:
    """A file's transformed valid rows, chunk by chunk, minus the keys dropped at the end.

    With a spill (`EncryptedSpill`) the chunks wait on disk, encrypted, and only one is
    in memory at a time; without one they are kept in memory (small files, tests); with
    `replay` (set by `replay_with`), nothing is kept: reading them again makes them again
    from the file. Each chunk is also offered to `sinks` as it comes. `close` removes
    the spill and closes the sinks.
    """

    def __init__(
        self,
        key: str,
        shape: pl.DataFrame,
        spill: EncryptedSpill | None = None,
        sinks: Sequence[RowSink] = (),
        *,
        replay: bool = False,
    ) -> None:
        self.key = key
        self.shape = shape  # the transform's output columns and types, no rows
        self.sinks = tuple(sinks)
        self._spill = spill
        self._replay: Callable[[], Iterator[pl.DataFrame]] | None = None
        self._replayed = replay
        self._chunks: list[pl.DataFrame] = []
        self._dropped: list[str] = []
        self._height = 0
        self._height_known = True

    def append(self, frame: pl.DataFrame) -> None:
        if not frame.height:
            return
        self._height += frame.height
        for sink in self.sinks:
            sink.offer(frame)
        if self._replayed:
            return
        if self._spill is not None:
            self._spill.append(frame)
        else:
            self._chunks.append(frame)

    def replay_with(self, replay: Callable[[], Iterator[pl.DataFrame]]) -> None:
        """How to make the rows again (for rows made with `replay`, once they are all made)."""
        self._replay = replay

    def drop_keys(self, keys: Iterable[str], rows: int | None = None) -> None:
        """Leave out every row whose (trimmed) key is one of `keys` (`rows` of them, if known)."""
        keys = list(keys)
        self._dropped.extend(keys)
        for sink in self.sinks:
            sink.drop_keys(keys)
        if rows is None:
            self._height_known = False
        elif self._height_known:
            self._height -= rows

    def frames(self) -> Iterator[pl.DataFrame]:
        if self._replayed:
            assert self._replay is not None, "replay_with() first"
            source = self._replay()
        else:
            source = self._spill.frames() if self._spill is not None else iter(self._chunks)
        for frame in source:
            if self._dropped:
                frame = frame.filter(~pl.col(self.key).str.strip_chars().is_in(self._dropped))
            if frame.height:
                yield frame

    @property
    def height(self) -> int:
        if not self._height_known:
            self._height = sum(frame.height for frame in self.frames())
            self._height_known = True
        return self._height

    def collect(self) -> pl.DataFrame:
        """Every row in one frame (empty, in the transform's shape, when there is none)."""
        frames = list(self.frames())
        return pl.concat(frames) if frames else self.shape

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        if self._spill is not None:
            self._spill.close()


def compacted(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy of `frame` that owns its strings.

    A frame filtered from a chunk keeps the whole chunk's string buffers alive (polars
    string views point into them; rechunk and shrink_to_fit keep them), so the few
    rows kept from every chunk would hold every chunk. An IPC round trip copies them out.
    """
    if not frame.height:
        return frame.clear()
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="uncompressed")
    buffer.seek(0)
    return pl.read_ipc(buffer)
