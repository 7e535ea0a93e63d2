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

import contextlib
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import polars as pl
import psycopg
from psycopg.rows import TupleRow
from pydantic import SecretStr

from batchbridge.connectors.targets.base import LoadRequest, LoadResult
from batchbridge.connectors.targets.postgres_driver import (
    CopySession,
    csv_ready,
    error_detail,
    postgres_type,
    write_copy_csv,
)
from batchbridge.connectors.targets.rows import check_load_request
from batchbridge.connectors.targets.sql_plan import (
    RESERVED_COLUMNS,
    STAGE_TABLE,
    Params,
    SqlPlan,
    SqlStatements,
    idents,
    quote,
)
from batchbridge.connectors.targets.sql_target import Phase
from batchbridge.crashpoints import crash_point
from batchbridge.errors import TargetError
from batchbridge.validations.base import ROW_COLUMN
from batchbridge.validations.keys_seen import key_hashes
from batchbridge.validations.transform import select_target_columns

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


class EarlyStage:
    """COPYs offered chunks into a temp stage from a thread, in one open transaction.

    `connect` opens the connection (not autocommit: the stage lives in the transaction
    it starts); `prepare` turns a transformed chunk into the frame to COPY (the target's
    columns, checked, CSV-ready); `begin` creates the stage for the first prepared chunk
    and returns the COPY statement. `take` ends the COPY and hands the open transaction
    to the load; `close` abandons it (rolled back).
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
    ) -> None:
        self.target = target
        self._key = key
        self._connect, self._prepare, self._begin = connect, prepare, begin
        self._copy_batch_rows = copy_batch_rows
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._session: CopySession | None = None
        self._writer: psycopg.Copy | None = None
        self._rows = 0
        self._hashes: list[pl.Series] = []  # of every staged key, to check them unique
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

    @property
    def unusable(self) -> str | None:
        """Why the stage cannot be used (None: it can, so far)."""
        return self._unusable

    def take(self) -> StagedSession | None:
        """End the COPY; the open transaction holding the stage, or None to load as before."""
        self._end_copy()
        if self._unusable is None and self._session is not None and not self._keys_unique():
            self._unusable = "keys repeat across chunks"
        if self._unusable is not None or self._conn is None or self._session is None:
            if self._unusable is not None:
                logger.info("target %s: loading from the spill (%s)", self.target, self._unusable)
            self._discard()
            return None
        conn, session = self._conn, self._session
        self._conn = self._session = None  # the load owns the transaction now
        return StagedSession(conn, session, self._rows, list(self._dropped))

    # -- the COPY thread --------------------------------------------------------------

    def _copy_chunks(self) -> None:
        with contextlib.ExitStack() as copying:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                if self._unusable is not None:
                    continue  # keep draining so `offer` never waits on a dead stage
                assert isinstance(item, pl.DataFrame)
                try:
                    self._copy_one(item, copying)
                except (psycopg.Error, TargetError) as exc:
                    self._unusable = f"staging while streaming failed: {type(exc).__name__}"
                except Exception as exc:  # never let a bug here decide a load
                    self._unusable = f"staging while streaming failed: {type(exc).__name__}"
            if self._unusable is None and self._session is not None:
                try:
                    copying.close()  # ends the COPY: the server has every row
                except psycopg.Error as exc:
                    self._unusable = f"ending the COPY failed: {type(exc).__name__}"
            else:
                copying.pop_all()  # the connection is discarded, COPY and all

    def _copy_one(self, frame: pl.DataFrame, copying: contextlib.ExitStack) -> None:
        ready = self._prepare(frame)
        keys = ready.get_column(self._key)
        if keys.dtype != pl.String or not bool((keys == keys.str.strip_chars()).all()):
            # Dropped keys are matched as trimmed text; a key that is not cannot be.
            raise TargetError(f"target {self.target}: keys are not trimmed text")
        if self._session is None:
            self._conn = self._connect()
            cur = self._conn.cursor()
            statement = self._begin(cur, ready)
            crash_point("before_early_copy")
            self._session = CopySession(cur, self._copy_batch_rows)
            self._writer = copying.enter_context(cur.copy(statement))
        assert self._writer is not None
        for offset in range(0, ready.height, self._copy_batch_rows):
            write_copy_csv(self._writer, ready.slice(offset, self._copy_batch_rows))
            crash_point("mid_early_copy")
        self._rows += ready.height
        self._hashes.append(key_hashes(keys))

    def _keys_unique(self) -> bool:
        """Whether the staged keys, less the dropped ones, are unique (64-bit hashes).

        The load then need not group the whole stage by key to prove it. Equal hashes
        (a repeat, or a collision) send the load down the ordinary path, which checks
        exactly: a repeat can never pass, a collision only costs time.
        """
        if not self._hashes:
            return True
        hashes = pl.concat(self._hashes)
        if self._dropped:
            hashes = hashes.filter(~hashes.is_in(key_hashes(pl.Series(self._dropped))))
        return hashes.n_unique() == hashes.len()

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


class EarlyStaging(ABC):
    """What PostgresTarget adds for early stages: open one, and finish a load from it."""

    name: str
    sql: SqlStatements
    columns: tuple[str, ...]
    copy_batch_rows: int
    _conninfo: SecretStr

    @abstractmethod
    def _table_oid(self, cur: Cursor) -> int | None: ...

    @abstractmethod
    def _set_work_mem(self, cur: Cursor) -> None: ...

    @abstractmethod
    def _ensure_table(self, cur: Cursor, plan: SqlPlan) -> None: ...

    @abstractmethod
    def _merge_stage(
        self,
        session: CopySession,
        phase: Phase,
        plan: SqlPlan,
        params: Params,
        load_id: str,
        *,
        keys_checked: bool = False,
    ) -> LoadResult: ...

    def open_early_stage(self, natural_key: Sequence[str], columns: Sequence[str]) -> EarlyStage:
        """A stage for a streamed file's rows that fills while the file is read (early_stage).

        `columns` are the target's columns as `load_into_targets` selects them.
        """
        keys = tuple(natural_key)
        template = LoadRequest(
            tenant="", natural_key=keys, load_id="", file_id="", rows=pl.DataFrame()
        )

        def prepare(frame: pl.DataFrame) -> pl.DataFrame:
            one = replace(
                template, rows=select_target_columns(frame, natural_key=keys, columns=columns)
            )
            checked = check_load_request(self.name, one, self.columns, RESERVED_COLUMNS)
            return csv_ready(checked.frame)

        def begin(cur: Cursor, ready: pl.DataFrame) -> str:
            self._set_work_mem(cur)
            data = [c for c in ready.columns if c not in keys and c != ROW_COLUMN]
            staged = (*keys, *data, "source_row")
            if self._table_oid(cur) is None:
                # The load creates the table with these same types (sql_plan.create_table).
                types = [postgres_type(c, ready.schema[c]) for c in (*keys, *data)]
                cur.execute(stage_ddl(STAGE_TABLE, staged, [*types, "integer"]))
            else:
                cur.execute(self.sql.create_stage(staged))
            return f"COPY {self.sql.stage} ({idents(staged)}) FROM STDIN (FORMAT csv)"

        return EarlyStage(
            self.name,
            key=keys[0],
            connect=lambda: psycopg.connect(self._conninfo.get_secret_value()),
            prepare=prepare,
            begin=begin,
            copy_batch_rows=self.copy_batch_rows,
        )

    def _finish_early_stage(
        self, staged: StagedSession, plan: SqlPlan, params: Params, load_id: str
    ) -> LoadResult | None:
        """Upsert from a stage filled while streaming and commit; None: load from the spill.

        Any failure falls back to the ordinary load, which is idempotent: even a commit
        whose outcome was lost only makes that load find its rows unchanged.
        """
        phase = Phase("prepare table")
        try:
            self._ensure_table(staged.session.cur, plan)
            rows = staged.rows
            if staged.dropped_keys:
                phase.name = "drop repeated keys from staging"
                rows -= staged.session.execute(
                    self.sql.delete_staged(plan.keys[0]), {"keys": staged.dropped_keys}
                )
            if rows != plan.sent:
                raise TargetError(f"staged {rows} rows, the load has {plan.sent}")
            done = self._merge_stage(
                staged.session, phase, plan, params, load_id, keys_checked=True
            )
            staged.conn.commit()
            staged.conn.close()
            return done
        except (psycopg.Error, TargetError) as exc:
            detail = error_detail(exc) if isinstance(exc, psycopg.Error) else str(exc)
            logger.info(
                "target %s: the stage filled while streaming failed at %s (%s); "
                "loading from the spill instead",
                self.name, phase.name, detail,
            )  # fmt: skip
            with contextlib.suppress(psycopg.Error):
                staged.conn.close()
            return None


def stage_ddl(stage: str, columns: Sequence[str], types: Sequence[str]) -> str:
    """A temp stage with the given column types, dropped at commit whatever happens."""
    definitions = ", ".join(f"{quote(c)} {t}" for c, t in zip(columns, types, strict=True))
    return f"CREATE TEMP TABLE {quote(stage)} ({definitions}) ON COMMIT DROP"
