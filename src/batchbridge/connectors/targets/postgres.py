"""PostgreSQL target: COPY the rows into a temp table, then one upsert on the natural key."""

# S608: the statements come from sql_plan (identifiers quoted there, values bound as
# parameters); the rest is composed with psycopg.sql.
# ruff: noqa: S608

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TypeVar

import polars as pl
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from pydantic import SecretStr

from batchbridge.connectors.retry import RetryPolicy, call_with_retries
from batchbridge.connectors.targets.base import CANARY_TABLE, LoadRequest, LoadResult
from batchbridge.connectors.targets.postgres_driver import (
    POSTGRES,
    CopySession,
    csv_ready,
    error_detail,
    is_transient,
    libpq_conninfo,
    postgres_type,
)
from batchbridge.connectors.targets.postgres_early import EarlyStaging, PostgresEarlyStage
from batchbridge.connectors.targets.sql_plan import (
    LINEAGE_COLUMNS,
    TENANT_COLUMN,
    Params,
    SqlPlan,
    SqlStatements,
    configured_columns,
    plan_load,
    quote,
    require_columns,
)
from batchbridge.connectors.targets.sql_target import (
    Phase,
    SqlTarget,
    describe_failure,
    mark_absent_inactive,
    refuse_repeated_keys,
)
from batchbridge.crashpoints import crash_point
from batchbridge.errors import ConfigError, TargetError, TransientTargetError

__all__ = ["LINEAGE_COLUMNS", "TENANT_COLUMN", "PostgresTarget", "postgres_type"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.Connection[TupleRow]
Cursor = psycopg.Cursor[TupleRow]


class PostgresTarget(EarlyStaging, SqlTarget[CopySession]):
    """Loads rows into `db_schema.table` on PostgreSQL, idempotently on (tenant, natural key).

    One transaction per load: create the table if missing, COPY the rows (CSV written
    by polars) into a temp table, upsert into the target where something changed,
    count what was inserted/updated, and confirm the keys are present. Only
    `columns` (plus the natural key and the source row number) are ever sent.
    Transient errors (connection lost, serialization failure, deadlock) are retried
    with a fresh connection by the retry layer; every other error is a TargetError
    naming the table and SQLSTATE but never a value (PostgreSQL's DETAIL lines quote
    row values).
    """

    def __init__(
        self,
        name: str,
        url: SecretStr | str,
        table: str,
        db_schema: str,
        columns: Sequence[str],
        max_attempts: int = 5,
        *,
        retry_initial_wait: float = 0.5,
        retry_max_wait: float = 10.0,
        copy_batch_rows: int = 100_000,
        work_mem: str | None = "64MB",
    ) -> None:
        self.name = name
        self.table = table
        self.db_schema = db_schema
        self.columns = configured_columns(name, columns)
        if max_attempts < 1:
            raise ConfigError(f"target {name}: max_attempts must be at least 1")
        self.retry_policy = RetryPolicy(
            max_attempts=max_attempts, initial_wait=retry_initial_wait, max_wait=retry_max_wait
        )
        self.copy_batch_rows = copy_batch_rows
        self.work_mem = work_mem
        secret = url if isinstance(url, SecretStr) else SecretStr(url)
        # Kept wrapped so a repr or a traceback's locals never show the password.
        self._conninfo = SecretStr(libpq_conninfo(secret.get_secret_value(), name))
        self._conn: Connection | None = None
        self.sql = SqlStatements(
            POSTGRES,
            f"{quote(db_schema)}.{quote(table)}",
            canary=f"{quote(db_schema)}.{quote(CANARY_TABLE)}",
        )
        # One connection, one transaction at a time: Prefect task threads sharing this
        # target take turns instead of interleaving statements in one transaction.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"PostgresTarget(name={self.name!r}, table={self.db_schema}.{self.table})"

    @property
    def max_attempts(self) -> int:
        return self.retry_policy.max_attempts

    # -- public API -----------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadResult:
        """Upsert `request.rows` in one transaction; retry only transient errors.

        A streamed file's rows that an `EarlyStage` of this target staged while the file
        was read are upserted from there; if that stage is unusable, from the chunks.
        """
        plan = plan_load(self.name, request, self.columns, prepare=csv_ready)
        params = {"tenant": request.tenant, "load_id": request.load_id, "file_id": request.file_id}
        stage = request.staged
        if isinstance(stage, PostgresEarlyStage) and stage.target == self.name:
            staged = stage.take()
            if staged is not None:
                done = self._finish_early_stage(stage, staged, plan, params, request.load_id)
                if done is not None:
                    return done

        def work(session: CopySession, phase: Phase) -> LoadResult:
            self._set_work_mem(session.cur)
            phase.name = "prepare table"
            self._ensure_table(session.cur, plan)
            phase.name = "copy rows to staging"
            self._stage(session, plan.staged, plan.frames())
            return self._merge_stage(session, phase, plan, params, request.load_id)

        return self._run("load", work, write=True)

    def count_keys_present(self, tenant: str, keys: pl.DataFrame) -> int:
        """How many rows of `keys` (natural-key columns only) exist for `tenant`.

        Lets reconciliation re-confirm a load without loading again.
        """
        key_columns = tuple(keys.columns)
        if not key_columns:
            raise TargetError(f"target {self.name}: count_keys_present needs key columns")

        def work(session: CopySession, phase: Phase) -> int:
            if not self._table_exists(session):
                return 0
            phase.name = "copy keys to staging"
            self._stage(session, key_columns, [csv_ready(keys)])
            phase.name = "count keys"
            return session.count(self.sql.count_present(key_columns), {"tenant": tenant})

        return self._run("count keys", work, write=True)

    def table_columns(self) -> list[str]:
        """Column names of the target table in order ([] when it does not exist)."""

        def work(session: CopySession, phase: Phase) -> list[str]:
            oid = self._table_oid(session.cur)
            return [] if oid is None else self._columns_of(session.cur, oid)

        return self._run("list columns", work, write=False)

    def close(self) -> None:
        """Close the connection; the next call opens a new one."""
        with self._lock:
            self._discard_connection()

    # -- statements -------------------------------------------------------------------

    def _table_oid(self, cur: Cursor) -> int | None:
        cur.execute(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (self.db_schema, self.table),
        )
        row = cur.fetchone()
        return None if row is None else int(row[0])

    def _table_exists(self, session: CopySession) -> bool:
        return self._table_oid(session.cur) is not None

    def _prepare_canary(self, session: CopySession) -> None:
        cur = session.cur
        cur.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (self.db_schema, CANARY_TABLE),
        )
        if cur.fetchone() is None:
            # Two feeds' checks creating the table at once would collide on its row
            # type; the lock makes the second wait and find the table.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (CANARY_TABLE,))
            cur.execute(self.sql.create_canary())

    def _canary_stamp(self, checked_at: datetime) -> object:
        return checked_at  # microseconds: timestamptz keeps it exactly

    @property
    def _canary_where(self) -> str:
        return f"{self.db_schema}.{CANARY_TABLE}"

    @staticmethod
    def _columns_of(cur: Cursor, oid: int) -> list[str]:
        cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum",
            (oid,),
        )
        return [str(row[0]) for row in cur.fetchall()]

    def _ensure_table(self, cur: Cursor, plan: SqlPlan) -> None:
        oid = self._table_oid(cur)
        if oid is None:
            # Checked first rather than relying on IF NOT EXISTS alone: that form still
            # needs CREATE privilege, which a loader role may lack once the table exists.
            # The lock serializes two first loads racing to create the same table.
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                (f"batchbridge:{self.db_schema}.{self.table}",),
            )
            if self.db_schema != "public":
                cur.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.db_schema))
                )
            # No index on load_id: it cost a third of the insert time in the benchmark,
            # and reconciliation reads the counts from the load itself.
            cur.execute(self.sql.create_table(plan))
            oid = self._table_oid(cur)
            assert oid is not None
        where = f"{self.db_schema}.{self.table}"
        require_columns(self.name, where, plan.columns, self._columns_of(cur, oid))

    def _stage(
        self, session: CopySession, columns: Sequence[str], frames: Iterable[pl.DataFrame]
    ) -> None:
        """Create the temp staging table with the target's own column types and COPY into it.

        Taking the types from the target (not from polars) makes the server parse the CSV
        straight into them, so the upsert needs no casts and an older table still works.
        A chunked load is copied as its chunks come, so only one is ever in memory here.
        """
        session.execute(self.sql.create_stage(columns))
        crash_point("before_copy")
        for frame in frames:
            session.insert_rows(
                self.sql.stage, columns, frame, after_batch=lambda: crash_point("mid_copy")
            )

    def _upsert(self, cur: Cursor, plan: SqlPlan, params: Params) -> tuple[int, int]:
        # xmax is 0 on a freshly inserted row version and set on an updated one; the
        # CTE keeps RETURNING server-side so only two counts cross the network.
        cur.execute(
            f"WITH upserted AS ({self.sql.upsert(plan)} RETURNING (t.xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) "
            "FROM upserted",
            params,
        )
        row = cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def _set_work_mem(self, cur: Cursor) -> None:
        if self.work_mem is not None:
            # Transaction-local: lets the key joins of a big load hash in memory.
            cur.execute("SELECT set_config('work_mem', %s, true)", (self.work_mem,))

    def _merge_stage(
        self,
        session: CopySession,
        phase: Phase,
        plan: SqlPlan,
        params: Params,
        load_id: str,
        *,
        keys_checked: bool = False,
        merged: tuple[int, int, int] | None = None,
    ) -> LoadResult:
        """Upsert the staged rows, confirm them, mark absent ones (snapshots); not committed.

        `keys_checked`: the staged keys are known unique already (an early stage's check);
        `merged`: they were upserted and confirmed already (inserted, updated, confirmed).
        """
        if not keys_checked:
            phase.name = "check keys unique"
            refuse_repeated_keys(session, self.sql, plan, self.name)
        crash_point("after_copy_before_upsert")
        if merged is None:
            phase.name = "upsert"
            inserted, updated = self._upsert(session.cur, plan, params)
            phase.name = "confirm"
            confirmed = session.count(self.sql.count_present(plan.keys), params)
        else:
            inserted, updated, confirmed = merged
        inactivated = 0
        if plan.snapshot:
            phase.name = "mark absent records inactive"
            inactivated = mark_absent_inactive(session, self.sql, plan, params)
        crash_point("after_upsert_before_commit")
        phase.name = "commit"
        return plan.result(
            self.name,
            load_id,
            inserted=inserted,
            updated=updated,
            confirmed=confirmed,
            inactivated=inactivated,
        )

    # -- connection, transaction, retries ---------------------------------------------

    def _run(self, action: str, work: Callable[[CopySession, Phase], T], *, write: bool) -> T:
        # Every unit of work is a transaction of its own, writing or not: `write` is moot.
        with self._lock:
            return call_with_retries(
                lambda: self._attempt(action, work),
                policy=self.retry_policy,
                transient=TransientTargetError,
                log=logger,
            )

    def _attempt(self, action: str, work: Callable[[CopySession, Phase], T]) -> T:
        phase = Phase("connect")
        try:
            conn = self._connection()
            phase.name = "begin"
            with conn.transaction(), conn.cursor() as cur:
                return work(CopySession(cur, self.copy_batch_rows), phase)
        except psycopg.Error as exc:
            transient = is_transient(exc, phase.name)
            if transient or self._conn is None or self._conn.broken:
                # Reconnect on the next attempt rather than reuse a suspect session.
                self._discard_connection()
            error = TransientTargetError if transient else TargetError
            where = f"{self.db_schema}.{self.table}"
            # `from None`: psycopg's own message quotes row values in its DETAIL line.
            raise error(
                describe_failure(self.name, action, where, phase, error_detail(exc))
            ) from None

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._discard_connection()
        # autocommit: every unit of work opens its own explicit transaction() block,
        # so no implicit transaction is ever left idle between loads.
        self._conn = psycopg.connect(self._conninfo.get_secret_value(), autocommit=True)
        return self._conn

    def _discard_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                conn.close()
            except psycopg.Error:
                logger.debug("target %s: closing a broken connection failed", self.name)
