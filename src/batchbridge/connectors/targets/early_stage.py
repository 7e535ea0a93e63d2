"""A streamed file's rows COPYed into a PostgreSQL stage while the file is still being read.

Without it the load starts once the stream has ended and COPYs the chunks back from the
spill, so PostgreSQL parses every row while the pipeline waits. `EarlyStage` takes
each transformed chunk as it is made (`TransformedRows` offers it), and a thread of its
own COPYs it into a temp stage on a connection of its own: PostgreSQL parses on the
other core while the next chunk is validated. The stage waits in an open transaction
until the load finishes it (`PostgresTarget.load`: drop the keys found repeated at the
end, upsert, confirm, commit), so nothing reaches the target table before the file
has been judged whole.

This can never change what is loaded: anything that goes wrong here (a lost
connection, a chunk the load would refuse, a thread that died) only marks the stage
unusable, and the load then runs as it did before, from the spill, with its retries.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import polars as pl
import psycopg
from psycopg.rows import TupleRow

from batchbridge.connectors.targets.postgres_driver import (
    CopySession,
    write_copy_csv,
)
from batchbridge.connectors.targets.sql_plan import (
    quote,
)
from batchbridge.crashpoints import crash_point
from batchbridge.errors import TargetError
from batchbridge.validations.keys_seen import KeysSeen, key_hashes

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[TupleRow]
Cursor = psycopg.Cursor[TupleRow]

_END = object()
_QUEUE_DEPTH = 2  # chunks waiting for the COPY thread: bounds the memory it may hold
_JOIN_TIMEOUT_S = 60.0


@dataclass
class StagedSession:
    """The open transaction holding a finished stage, and what went into the stage."""

    conn: Connection
    session: CopySession
    rows: int
    dropped_keys: list[str]
    dropped_rows: int
    """Staged rows whose key is dropped."""


class EarlyStage:
    """COPYs offered chunks into a temp stage from a thread, in one open transaction.

    `connect` opens the connection (not autocommit: the stage lives in the transaction
    it starts); `prepare` turns a transformed chunk into the frame to COPY (the target's
    columns, checked, CSV-ready); `begin` creates the stage for the first prepared chunk
    and returns the COPY statement, run once per chunk; `after_chunk`, if given, runs
    after each chunk's COPY (a stage that upserts as it goes). `take` waits for the last
    chunk and hands the open transaction to the load; `close` abandons it (rolled back).
    """

    def __init__(
        self,
        target: str,
        *,
        key: str,
        connect: Callable[[], Connection],
        prepare: Callable[[pl.DataFrame], pl.DataFrame],
        begin: Callable[[Cursor, pl.DataFrame], str],
        copy_batch_rows: int,
        after_chunk: Callable[[CopySession], None] | None = None,
        load_id: str | None = None,
    ) -> None:
        self.target = target
        self.load_id = load_id
        """The load id the rows carry already (a stage that upserts as it goes), or None."""
        self._after_chunk = after_chunk
        self._key = key
        self._connect, self._prepare, self._begin = connect, prepare, begin
        self._copy_batch_rows = copy_batch_rows
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._session: CopySession | None = None
        self._statement = ""
        self._rows = 0
        self._keys = KeysSeen()  # hashes of every staged key, to check them unique
        self._repeats = False
        self._dropped: list[str] = []
        self._unusable: str | None = None
        self._ended = False

    # -- what TransformedRows calls (validations.transformed_rows.RowSink) -------------

    def offer(self, frame: pl.DataFrame) -> None:
        """Queue `frame` for the COPY thread (waits while two chunks are queued already)."""
        if self._ended or self._unusable is not None or not frame.height:
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._copy_chunks, name=f"early-stage-{self.target}", daemon=True
            )
            self._thread.start()
        self._queue.put(frame)

    def drop_keys(self, keys: Iterable[str]) -> None:
        """Rows with these keys (trimmed) were staged but must not be loaded."""
        self._dropped.extend(keys)

    def close(self) -> None:
        """Abandon the stage: the transaction is rolled back, nothing was written."""
        self._end_copy()
        self._discard()

    # -- what the load calls ----------------------------------------------------------

    def take(self) -> StagedSession | None:
        """End the COPY; the open transaction holding the stage, or None to load as before."""
        self._end_copy()
        if self._unusable is None and self._session is not None and not self._keys_unique():
            self._unusable = "keys repeat across chunks"
        if self._unusable is not None or self._conn is None or self._session is None:
            if self._unusable is not None:
                logger.info(
                    "target %s: falling back to the ordinary load (%s)", self.target, self._unusable
                )
            self._discard()
            return None
        conn, session = self._conn, self._session
        self._conn = self._session = None  # the load owns the transaction now
        return StagedSession(conn, session, self._rows, list(self._dropped), self.dropped_rows)

    # -- the COPY thread --------------------------------------------------------------

    def _copy_chunks(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._unusable is not None:
                continue  # keep draining so `offer` never waits on a dead stage
            assert isinstance(item, pl.DataFrame)
            try:
                self._copy_one(item)
            except Exception as exc:  # never let anything here decide a load
                self._unusable = f"staging while streaming failed: {type(exc).__name__}"

    def _copy_one(self, frame: pl.DataFrame) -> None:
        ready = self._prepare(frame)
        keys = ready.get_column(self._key)
        if keys.dtype != pl.String or not bool((keys == keys.str.strip_chars()).all()):
            # Dropped keys are matched as trimmed text; a key that is not cannot be.
            raise TargetError(f"target {self.target}: keys are not trimmed text")
        if self._session is None:
            self._conn = self._connect()
            cur = self._conn.cursor()
            self._statement = self._begin(cur, ready)
            crash_point("before_early_copy")
            self._session = CopySession(cur, self._copy_batch_rows)
        with self._session.cur.copy(self._statement) as copy:
            for offset in range(0, ready.height, self._copy_batch_rows):
                write_copy_csv(copy, ready.slice(offset, self._copy_batch_rows))
                crash_point("mid_early_copy")
        if self._after_chunk is not None:
            self._after_chunk(self._session)
        self._rows += ready.height
        hashes = key_hashes(keys)
        # Within a chunk the keys are unique (prepare refuses others); across chunks,
        # a hash seen before is a repeat, or a collision (see `_keys_unique`).
        self._repeats = self._repeats or bool(self._keys.seen(hashes).any())
        self._keys.add(hashes)

    @property
    def dropped_rows(self) -> int:
        """How many staged rows have a dropped key (by hash: see `_keys_unique`)."""
        if not self._dropped:
            return 0
        return int(self._keys.seen(key_hashes(pl.Series(self._dropped, dtype=pl.String))).sum())

    def _keys_unique(self) -> bool:
        """Whether the staged keys are unique, by their 64-bit hashes.

        The load then need not group the whole stage by key to prove it. (A dropped
        key's later copies were held back, never staged.) Equal hashes (a repeat, or a
        collision) send the load down the ordinary path, which checks exactly: a
        repeat can never pass, a collision only costs time.
        """
        return not self._repeats

    def _end_copy(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._thread is not None:
            self._queue.put(_END)
            self._thread.join(_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                self._unusable = "the COPY thread did not finish"

    def _discard(self) -> None:
        conn, self._conn, self._session = self._conn, None, None
        if conn is not None and not conn.closed:
            try:
                conn.close()  # an open transaction is rolled back
            except psycopg.Error:
                logger.debug("target %s: closing the early stage's connection failed", self.target)


def stage_ddl(stage: str, columns: Sequence[str], types: Sequence[str]) -> str:
    """A temp stage with the given column types, dropped at commit whatever happens."""
    definitions = ", ".join(f"{quote(c)} {t}" for c, t in zip(columns, types, strict=True))
    return f"CREATE TEMP TABLE {quote(stage)} ({definitions}) ON COMMIT DROP"
