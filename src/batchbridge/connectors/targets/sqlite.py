"""SQLite target, the embedded default: the same idempotent upsert as PostgreSQL, in one file."""

# S608: SQL here is built from identifiers passed through _quote (double quotes,
# embedded quotes doubled); every value is bound as a ? parameter.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import polars as pl

from batchbridge.connectors.targets.base import CANARY_TABLE, LoadRequest, LoadResult
from batchbridge.connectors.targets.rows import SNAPSHOT_COLUMNS, check_load_request
from batchbridge.errors import ConfigError, TargetError, TransientTargetError
from batchbridge.validations.base import ROW_COLUMN

__all__ = ["LINEAGE_COLUMNS", "TENANT_COLUMN", "SqliteTarget", "sqlite_type"]

T = TypeVar("T")

TENANT_COLUMN = "tenant"
LINEAGE_COLUMNS = ("load_id", "file_id", "source_row", "loaded_at")
"""Added to every row: which load wrote it, from which file and record, and when (UTC text)."""

DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f+00:00"
"""Datetimes are stored as fixed-width ISO-8601 UTC text, so text order is time order."""

_RESERVED = frozenset({TENANT_COLUMN, *LINEAGE_COLUMNS, *SNAPSHOT_COLUMNS, ROW_COLUMN})
_STAGE = '"temp"."_batchbridge_stage"'
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


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _idents(columns: Sequence[str], prefix: str = "") -> str:
    return ", ".join(prefix + _quote(c) for c in columns)


@dataclass(frozen=True)
class _Plan:
    keys: tuple[str, ...]
    data: tuple[str, ...]
    frame: pl.DataFrame  # keys + data + ROW_COLUMN only (data minimization)
    snapshot: bool = False
    kept: pl.DataFrame | None = None  # keys of quarantined rows a snapshot keeps active

    @property
    def sent(self) -> int:
        return self.frame.height


class _Phase:
    """What a transaction was doing when it failed, for error messages."""

    def __init__(self) -> None:
        self.name = "open"


class SqliteTarget:
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
        self.columns = tuple(dict.fromkeys(columns))
        reserved = sorted(_RESERVED.intersection(self.columns))
        if reserved:
            raise ConfigError(f"target {name}: columns {reserved} are reserved for lineage")
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        # Prefect may call one target from several task threads; sqlite3 connections
        # must not be used concurrently, so loads on one instance take turns.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteTarget(name={self.name!r}, path={str(self.path)!r}, table={self.table!r})"

    # -- public API -----------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadResult:
        """Upsert `request.rows` in one transaction; a locked database is transient."""
        plan = self._plan(request)
        loaded_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")

        def work(conn: sqlite3.Connection, phase: _Phase) -> LoadResult:
            phase.name = "prepare table"
            self._ensure_table(conn, plan)
            phase.name = "stage rows"
            self._stage(conn, (*plan.keys, *plan.data, "source_row"), plan.frame)
            phase.name = "upsert"
            existing = self._count_staged_present(conn, request.tenant, plan.keys)
            changed = conn.execute(
                self._upsert_sql(plan),
                (request.tenant, request.load_id, request.file_id, loaded_at),
            ).rowcount
            # SQLite has no xmax: keys found before the upsert were updates or no-ops,
            # and changes() counts inserted plus actually updated rows.
            inserted = plan.sent - existing
            updated = changed - inserted
            phase.name = "confirm"
            confirmed = self._count_staged_present(conn, request.tenant, plan.keys)
            inactivated = 0
            if plan.snapshot:
                phase.name = "mark absent records inactive"
                inactivated = self._mark_absent_inactive(conn, plan, request, loaded_at)
            conn.execute(f"DROP TABLE {_STAGE}")
            phase.name = "commit"
            return LoadResult(
                target=self.name,
                load_id=request.load_id,
                rows_inserted=inserted,
                rows_updated=updated,
                rows_unchanged=plan.sent - inserted - updated,
                rows_rejected=0,
                rows_confirmed=confirmed,
                rows_inactivated=inactivated,
            )

        return self._transaction("load", work, write=True)

    def count_rows(self, tenant: str) -> int:
        """Rows of `tenant` in the table (0 when the table does not exist yet)."""
        query = f"SELECT count(*) FROM {_quote(self.table)} WHERE {_quote(TENANT_COLUMN)} = ?"
        return self._count_if_exists("count rows", query, (tenant,))

    def rows_for_load(self, load_id: str) -> int:
        """Rows whose current lineage is `load_id` (rows a later load changed move on)."""
        query = f"SELECT count(*) FROM {_quote(self.table)} WHERE load_id = ?"
        return self._count_if_exists("count rows of load", query, (load_id,))

    def count_keys_present(self, tenant: str, keys: pl.DataFrame) -> int:
        """How many rows of `keys` (natural-key columns only) exist for `tenant`."""
        key_columns = tuple(keys.columns)
        if not key_columns:
            raise TargetError(f"target {self.name}: count_keys_present needs key columns")

        def work(conn: sqlite3.Connection, phase: _Phase) -> int:
            if not self._table_exists(conn):
                return 0
            phase.name = "stage keys"
            self._stage(conn, key_columns, _sqlite_ready(keys))
            phase.name = "count keys"
            count = self._count_staged_present(conn, tenant, key_columns)
            conn.execute(f"DROP TABLE {_STAGE}")
            return count

        return self._transaction("count keys", work, write=True)

    def table_columns(self) -> list[str]:
        """Column names of the target table in order ([] when it does not exist)."""

        def work(conn: sqlite3.Connection, phase: _Phase) -> list[str]:
            return self._columns_of(conn)

        return self._transaction("list columns", work, write=False)

    def check_writable(self, tenant: str) -> datetime:
        """Upsert `tenant`'s row in `batchbridge_health_canary`, read it back, commit.

        Same contract as PostgresTarget.check_writable: the row is kept, one per tenant.
        """
        canary = _quote(CANARY_TABLE)
        checked_at = datetime.now(UTC)
        stamp = checked_at.isoformat(timespec="microseconds")

        def work(conn: sqlite3.Connection, phase: _Phase) -> datetime:
            phase.name = "prepare canary table"
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS main.{canary} "
                "(tenant TEXT PRIMARY KEY NOT NULL, checked_at TEXT NOT NULL)"
            )
            phase.name = "write canary"
            conn.execute(
                f"INSERT INTO main.{canary} (tenant, checked_at) VALUES (?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET checked_at = excluded.checked_at",
                (tenant, stamp),
            )
            phase.name = "read canary"
            row = conn.execute(
                f"SELECT checked_at FROM main.{canary} WHERE tenant = ?", (tenant,)
            ).fetchone()
            if row is None or row[0] != stamp:
                raise TargetError(
                    f"target {self.name}: the canary row read back from "
                    f"{self.path.name}:{CANARY_TABLE} differs from the one written"
                )
            phase.name = "commit"
            return checked_at

        return self._transaction("health canary", work, write=True)

    def close(self) -> None:
        """Close the database file; the next call opens it again."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def __enter__(self) -> SqliteTarget:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- request checks (no database needed) ------------------------------------------

    def _plan(self, request: LoadRequest) -> _Plan:
        checked = check_load_request(self.name, request, self.columns, _RESERVED)
        kept = None
        if request.full_snapshot and request.kept_keys is not None:
            kept = request.kept_keys.select(
                [pl.col(k).cast(pl.String) for k in checked.keys]
            ).unique()
        return _Plan(
            keys=checked.keys,
            data=checked.data,
            frame=checked.frame,
            snapshot=request.full_snapshot,
            kept=kept,
        )

    # -- statements -------------------------------------------------------------------

    def _table_exists(self, conn: sqlite3.Connection) -> bool:
        row = conn.execute(
            "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?", (self.table,)
        ).fetchone()
        return row is not None

    def _columns_of(self, conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute(f"PRAGMA main.table_info({_quote(self.table)})").fetchall()
        return [str(row[1]) for row in rows]

    def _ensure_table(self, conn: sqlite3.Connection, plan: _Plan) -> None:
        if not self._table_exists(conn):
            conn.execute(self._create_table_sql(plan))
        present = set(self._columns_of(conn))
        expected = (TENANT_COLUMN, *plan.keys, *plan.data, *LINEAGE_COLUMNS)
        if plan.snapshot:
            expected += SNAPSHOT_COLUMNS
        missing = [c for c in expected if c not in present]
        if missing:
            raise TargetError(
                f"target {self.name}: table {self.table} lacks columns {missing}; "
                "add them (batchbridge does not alter existing tables)"
            )

    def _create_table_sql(self, plan: _Plan) -> str:
        schema = plan.frame.schema
        # NOT NULL on the key is explicit: SQLite, unlike PostgreSQL, lets NULL into a
        # PRIMARY KEY column of an ordinary table.
        definitions = [f"{_quote(TENANT_COLUMN)} TEXT NOT NULL"]
        definitions += [f"{_quote(c)} {sqlite_type(c, schema[c])} NOT NULL" for c in plan.keys]
        definitions += [f"{_quote(c)} {sqlite_type(c, schema[c])}" for c in plan.data]
        definitions += [
            "load_id TEXT NOT NULL",
            "file_id TEXT NOT NULL",
            "source_row INTEGER NOT NULL",
            "loaded_at TEXT NOT NULL",
        ]
        if plan.snapshot:
            definitions += [
                "active INTEGER NOT NULL DEFAULT 1",
                "inactivated_by_load TEXT",
                "inactivated_at TEXT",
            ]
        definitions += [f"PRIMARY KEY ({_idents((TENANT_COLUMN, *plan.keys))})"]
        return f"CREATE TABLE IF NOT EXISTS {_quote(self.table)} ({', '.join(definitions)})"

    def _stage(
        self, conn: sqlite3.Connection, columns: tuple[str, ...], frame: pl.DataFrame
    ) -> None:
        # The staging table copies the target's declared types, so values are stored
        # with the same affinity and the IS NOT comparisons below compare like with like.
        conn.execute(
            f"CREATE TEMP TABLE {_quote('_batchbridge_stage')} AS "
            f"SELECT {_idents(columns)} FROM main.{_quote(self.table)} WHERE 0"
        )
        placeholders = ", ".join("?" for _ in columns)
        conn.executemany(
            f"INSERT INTO {_STAGE} ({_idents(columns)}) VALUES ({placeholders})",
            _sqlite_ready(frame).iter_rows(),
        )

    def _upsert_sql(self, plan: _Plan) -> str:
        target = _quote(self.table)
        columns = (TENANT_COLUMN, *plan.keys, *plan.data, *LINEAGE_COLUMNS)
        selected = ["?", *(f"s.{_quote(c)}" for c in (*plan.keys, *plan.data))]
        selected += ["?", "?", "s.source_row", "?"]
        assignments = [
            f"{_quote(c)} = excluded.{_quote(c)}" for c in (*plan.data, *LINEAGE_COLUMNS)
        ]
        # IS NOT is SQLite's null-safe "distinct from".
        conditions = [f"{target}.{_quote(c)} IS NOT excluded.{_quote(c)}" for c in plan.data]
        if plan.snapshot:
            # A record back in a full file is current again.
            assignments.append("active = 1, inactivated_by_load = NULL, inactivated_at = NULL")
            conditions.append(f"{target}.active = 0")
        if conditions:
            # Lineage moves only with the data, so loading a file twice changes nothing.
            on_conflict = f"DO UPDATE SET {', '.join(assignments)} WHERE {' OR '.join(conditions)}"
        else:
            on_conflict = "DO NOTHING"
        # "WHERE true" is required: without it SQLite parses ON CONFLICT as a join's ON.
        return (
            f"INSERT INTO {target} ({_idents(columns)}) SELECT {', '.join(selected)} "
            f"FROM {_STAGE} AS s WHERE true "
            f"ON CONFLICT ({_idents((TENANT_COLUMN, *plan.keys))}) {on_conflict}"
        )

    def _mark_absent_inactive(
        self, conn: sqlite3.Connection, plan: _Plan, request: LoadRequest, at: str
    ) -> int:
        """Mark the tenant's active records that this full file lacks inactive; their count.

        Keys of the file's quarantined rows (`plan.kept`) are still current records.
        """
        kept = _quote("_batchbridge_kept")
        conn.execute(
            f"CREATE TEMP TABLE {kept} ({', '.join(f'{_quote(k)} TEXT' for k in plan.keys)})"
        )
        if plan.kept is not None and plan.kept.height:
            placeholders = ", ".join("?" for _ in plan.keys)
            conn.executemany(
                f"INSERT INTO temp.{kept} ({_idents(plan.keys)}) VALUES ({placeholders})",
                plan.kept.iter_rows(),
            )
        in_file = " AND ".join(f"s.{_quote(k)} = t.{_quote(k)}" for k in plan.keys)
        in_kept = " AND ".join(f"k.{_quote(k)} = CAST(t.{_quote(k)} AS TEXT)" for k in plan.keys)
        changed = conn.execute(
            f"UPDATE main.{_quote(self.table)} AS t SET active = 0, inactivated_by_load = ?, "
            f"inactivated_at = ? WHERE t.{_quote(TENANT_COLUMN)} = ? AND t.active = 1 "
            f"AND NOT EXISTS (SELECT 1 FROM {_STAGE} AS s WHERE {in_file}) "
            f"AND NOT EXISTS (SELECT 1 FROM temp.{kept} AS k WHERE {in_kept})",
            (request.load_id, at, request.tenant),
        ).rowcount
        conn.execute(f"DROP TABLE temp.{kept}")
        return max(changed, 0)

    def _count_staged_present(
        self, conn: sqlite3.Connection, tenant: str, keys: tuple[str, ...]
    ) -> int:
        join = " AND ".join(
            [f"t.{_quote(TENANT_COLUMN)} = ?", *(f"t.{_quote(k)} = s.{_quote(k)}" for k in keys)]
        )
        row = conn.execute(
            f"SELECT count(*) FROM {_STAGE} AS s JOIN main.{_quote(self.table)} AS t ON {join}",
            (tenant,),
        ).fetchone()
        return int(row[0])

    def _count_if_exists(self, action: str, query: str, params: tuple[str]) -> int:
        def work(conn: sqlite3.Connection, phase: _Phase) -> int:
            if not self._table_exists(conn):
                return 0
            phase.name = action
            return int(conn.execute(query, params).fetchone()[0])

        return self._transaction(action, work, write=False)

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

    def _transaction(
        self,
        action: str,
        work: Callable[[sqlite3.Connection, _Phase], T],
        *,
        write: bool,
    ) -> T:
        phase = _Phase()
        with self._lock:
            try:
                conn = self._connection()
                # IMMEDIATE takes the write lock up front: two writers never deadlock
                # upgrading from a read lock, they wait (busy timeout) instead.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = work(conn, phase)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result
            except sqlite3.Error as exc:
                code = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
                error = TransientTargetError if code in _TRANSIENT_ERRORS else TargetError
                # Only the error code: SQLite messages may name values in some cases.
                raise error(
                    f"target {self.name}: {action} on {self.path.name}:{self.table} failed "
                    f"at {phase.name}: {type(exc).__name__} ({code})"
                ) from None


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
