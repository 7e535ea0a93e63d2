"""SQLite target, the embedded default: the same idempotent upsert as PostgreSQL, in one file."""

# S608: SQL here is built from identifiers passed through quote (double quotes,
# embedded quotes doubled); every value is bound as a parameter.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import polars as pl

from batchbridge.connectors.targets.base import CANARY_TABLE, LoadRequest, LoadResult
from batchbridge.connectors.targets.sql_plan import (
    LINEAGE_COLUMNS,
    TENANT_COLUMN,
    Params,
    SqlDialect,
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
    stage_rows,
)
from batchbridge.errors import TargetError, TransientTargetError

__all__ = ["LINEAGE_COLUMNS", "TENANT_COLUMN", "SqliteTarget", "sqlite_type"]

T = TypeVar("T")

DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f+00:00"
"""Datetimes are stored as fixed-width ISO-8601 UTC text, so text order is time order."""

# SQLITE_BUSY / SQLITE_LOCKED: another writer held the file past the busy timeout.
_TRANSIENT_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED")


def sqlite_type(column: str, dtype: pl.DataType) -> str:
    """Declared type a new SQLite table gets for a polars column."""
    if dtype.is_integer() or dtype == pl.Boolean:
        return "INTEGER"
    if dtype.is_float():
        return "REAL"
    if dtype in (pl.String, pl.Categorical, pl.Date, pl.Time) or isinstance(
        dtype, (pl.Enum, pl.Decimal)
    ):
        return "TEXT"
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            raise TargetError(f"column {column!r} is a naive Datetime; convert it to UTC first")
        return "TEXT"
    raise TargetError(f"column {column!r} has dtype {dtype} that no target column type fits")


SQLITE = SqlDialect(
    column_type=sqlite_type,
    text="TEXT",
    integer="INTEGER",
    timestamp="TEXT",  # DATETIME_FORMAT text
    boolean="INTEGER",
    true="1",
    false="0",
    now=":loaded_at",  # SQLite has no transaction timestamp: the load binds one
    differs="IS NOT",  # SQLite's null-safe "distinct from"
    temp_schema="temp",
    temp_options="",
    param_style=":{}",
)


class _Session:
    """The shared SQL steps over one sqlite3 connection inside a transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, statement: str, params: Params | None = None) -> int:
        return max(self.conn.execute(statement, params or {}).rowcount, 0)

    def count(self, statement: str, params: Params) -> int:
        return int(self.conn.execute(statement, params).fetchone()[0])

    def value(self, statement: str, params: Params) -> object:
        row = self.conn.execute(statement, params).fetchone()
        return None if row is None else row[0]

    def insert_rows(self, table: str, columns: Sequence[str], frame: pl.DataFrame) -> None:
        placeholders = ", ".join("?" for _ in columns)
        self.conn.executemany(
            f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) VALUES ({placeholders})",
            _sqlite_ready(frame).iter_rows(),
        )


class SqliteTarget(SqlTarget[_Session]):
    """Loads rows into `table` of the SQLite file at `path`, idempotently on the natural key.

    One IMMEDIATE transaction per load (WAL mode, so readers are not blocked): create
    the table if missing, stage the rows in a temp table, upsert where something
    changed, count what was inserted/updated, and confirm the keys are present.
    """

    def __init__(
        self, name: str, path: Path, table: str, columns: Sequence[str], *, timeout: float = 30.0
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.table = table
        self.columns = configured_columns(name, columns)
        self.timeout = timeout
        self.sql = SqlStatements(
            SQLITE, f"main.{quote(table)}", canary=f"main.{quote(CANARY_TABLE)}"
        )
        self._conn: sqlite3.Connection | None = None
        # Prefect may call one target from several task threads; sqlite3 connections
        # must not be used concurrently, so loads on one instance take turns.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteTarget(name={self.name!r}, path={str(self.path)!r}, table={self.table!r})"

    # -- public API -----------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadResult:
        """Upsert `request.rows` in one transaction; a locked database is transient."""
        plan = plan_load(self.name, request, self.columns)
        params = {
            "tenant": request.tenant,
            "load_id": request.load_id,
            "file_id": request.file_id,
            "loaded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"),
        }

        def work(session: _Session, phase: Phase) -> LoadResult:
            phase.name = "prepare table"
            self._ensure_table(session, plan)
            phase.name = "stage rows"
            stage_rows(session, self.sql, plan.staged, plan.frames())
            refuse_repeated_keys(session, self.sql, plan, self.name)
            phase.name = "upsert"
            existing = session.count(self.sql.count_present(plan.keys), params)
            changed = session.execute(self.sql.upsert(plan), params)
            # SQLite has no xmax: keys found before the upsert were updates or no-ops,
            # and changes() counts inserted plus actually updated rows.
            inserted = plan.sent - existing
            phase.name = "confirm"
            confirmed = session.count(self.sql.count_present(plan.keys), params)
            inactivated = 0
            if plan.snapshot:
                phase.name = "mark absent records inactive"
                inactivated = mark_absent_inactive(session, self.sql, plan, params)
            session.execute(self.sql.drop(self.sql.stage))
            phase.name = "commit"
            return plan.result(
                self.name,
                request.load_id,
                inserted=inserted,
                updated=changed - inserted,
                confirmed=confirmed,
                inactivated=inactivated,
            )

        return self._run("load", work, write=True)

    def count_keys_present(self, tenant: str, keys: pl.DataFrame) -> int:
        """How many rows of `keys` (natural-key columns only) exist for `tenant`."""
        key_columns = tuple(keys.columns)
        if not key_columns:
            raise TargetError(f"target {self.name}: count_keys_present needs key columns")

        def work(session: _Session, phase: Phase) -> int:
            if not self._table_exists(session):
                return 0
            phase.name = "stage keys"
            stage_rows(session, self.sql, key_columns, [keys])
            phase.name = "count keys"
            count = session.count(self.sql.count_present(key_columns), {"tenant": tenant})
            session.execute(self.sql.drop(self.sql.stage))
            return count

        return self._run("count keys", work, write=True)

    def table_columns(self) -> list[str]:
        """Column names of the target table in order ([] when it does not exist)."""

        def work(session: _Session, phase: Phase) -> list[str]:
            return self._columns_of(session.conn)

        return self._run("list columns", work, write=False)

    def close(self) -> None:
        """Close the database file; the next call opens it again."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    # -- statements -------------------------------------------------------------------

    def _table_exists(self, session: _Session) -> bool:
        row = session.conn.execute(
            "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?", (self.table,)
        ).fetchone()
        return row is not None

    def _prepare_canary(self, session: _Session) -> None:
        session.execute(self.sql.create_canary())

    def _canary_stamp(self, checked_at: datetime) -> object:
        return checked_at.isoformat(timespec="microseconds")  # what the TEXT column keeps

    @property
    def _canary_where(self) -> str:
        return f"{self.path.name}:{CANARY_TABLE}"

    def _columns_of(self, conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute(f"PRAGMA main.table_info({quote(self.table)})").fetchall()
        return [str(row[1]) for row in rows]

    def _ensure_table(self, session: _Session, plan: SqlPlan) -> None:
        if not self._table_exists(session):
            session.execute(self.sql.create_table(plan))
        require_columns(self.name, self.table, plan.columns, self._columns_of(session.conn))

    # -- connection and transaction ---------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are opened explicitly below, never
            # implicitly by the sqlite3 module.
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                # WAL lets readers (reports, stewards) work while a load writes; NORMAL
                # sync is durable across application crashes in WAL mode.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                # The staging table holds patient rows: keep it in memory, not in a
                # temp file beside the database (plaintext never rests outside it).
                conn.execute("PRAGMA temp_store=MEMORY")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _run(self, action: str, work: Callable[[_Session, Phase], T], *, write: bool) -> T:
        phase = Phase("open")
        with self._lock:
            try:
                conn = self._connection()
                # IMMEDIATE takes the write lock up front: two writers never deadlock
                # upgrading from a read lock, they wait (busy timeout) instead.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = work(_Session(conn), phase)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result
            except sqlite3.Error as exc:
                code = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
                error = TransientTargetError if code in _TRANSIENT_ERRORS else TargetError
                where = f"{self.path.name}:{self.table}"
                # Only the error code: SQLite messages may name values in some cases.
                detail = f"{type(exc).__name__} ({code})"
                raise error(describe_failure(self.name, action, where, phase, detail)) from None


def _sqlite_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """Convert dtypes sqlite3 cannot bind into the text/integer forms the table stores."""
    conversions: list[pl.Expr] = []
    for column, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:
                raise TargetError(f"column {column!r} is a naive Datetime; convert it to UTC first")
            conversions.append(
                pl.col(column).dt.convert_time_zone("UTC").dt.strftime(DATETIME_FORMAT)
            )
        elif dtype == pl.Date:
            conversions.append(pl.col(column).dt.strftime("%Y-%m-%d"))
        elif dtype == pl.Time or isinstance(dtype, pl.Decimal):
            conversions.append(pl.col(column).cast(pl.String))
        elif dtype == pl.Boolean:
            conversions.append(pl.col(column).cast(pl.Int8))
        elif dtype == pl.Categorical or isinstance(dtype, pl.Enum):
            conversions.append(pl.col(column).cast(pl.String))
    return frame.with_columns(conversions) if conversions else frame
