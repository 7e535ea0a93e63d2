"""PostgreSQL target: COPY the rows into a temp table, then one upsert on the natural key."""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TypeVar

import polars as pl
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from batchbridge.connectors.targets.base import CANARY_TABLE, LoadRequest, LoadResult
from batchbridge.connectors.targets.rows import SNAPSHOT_COLUMNS, check_load_request
from batchbridge.crashpoints import crash_point
from batchbridge.errors import ConfigError, TargetError, TransientTargetError
from batchbridge.validations.base import ROW_COLUMN

__all__ = ["LINEAGE_COLUMNS", "TENANT_COLUMN", "PostgresTarget", "postgres_type"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.Connection[TupleRow]
Cursor = psycopg.Cursor[TupleRow]

TENANT_COLUMN = "tenant"
LINEAGE_COLUMNS = ("load_id", "file_id", "source_row", "loaded_at")
"""Added to every row: which load wrote it, from which file and record, and when."""

_RESERVED = frozenset({TENANT_COLUMN, *LINEAGE_COLUMNS, *SNAPSHOT_COLUMNS, ROW_COLUMN})
_STAGE_NAME = "_batchbridge_stage"
_KEPT_NAME = "_batchbridge_kept"
# Qualified so a permanent table of the same name on the search_path can never be hit.
_STAGE = sql.Identifier("pg_temp", _STAGE_NAME)

# Errors that a fresh connection and another try may cure. Anything else (constraint
# violations, missing columns, permissions, full disk) fails the same way again.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "53300", "57P01", "57P02", "57P03"})
# libpq reports a refused login without a SQLSTATE; these are not worth a retry.
_PERMANENT_CONNECT = re.compile(
    r"password authentication failed|no pg_hba\.conf entry|does not exist|"
    r"not permitted to log in|permission denied|authentication method|invalid (?:URI|dsn)",
    re.IGNORECASE,
)
_DRIVER_SUFFIX = re.compile(r"^postgres(?:ql)?\+[A-Za-z0-9_]+://")


def postgres_type(column: str, dtype: pl.DataType) -> str:
    """SQL type a new table gets for a polars column; TargetError for unsupported dtypes."""
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "text"
    simple = {
        pl.Float64: "double precision",
        pl.Float32: "real",
        pl.Int64: "bigint",
        pl.UInt32: "bigint",
        pl.Int32: "integer",
        pl.UInt16: "integer",
        pl.Int16: "smallint",
        pl.Int8: "smallint",
        pl.UInt8: "smallint",
        pl.UInt64: "numeric(20)",
        pl.Boolean: "boolean",
        pl.Date: "date",
        pl.Time: "time",
    }
    for polars_type, sql_type in simple.items():
        if dtype == polars_type:
            return sql_type
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            # A naive time in a warehouse is ambiguous; the transform converts to UTC.
            raise TargetError(f"column {column!r} is a naive Datetime; convert it to UTC first")
        return "timestamptz"
    if isinstance(dtype, pl.Decimal):
        if dtype.precision is None:
            return "numeric"
        return f"numeric({dtype.precision},{dtype.scale})"
    raise TargetError(f"column {column!r} has dtype {dtype} that no target column type fits")


@dataclass(frozen=True)
class _Plan:
    """A request reduced to what this target may receive, ready to stream as CSV."""

    keys: tuple[str, ...]
    data: tuple[str, ...]
    frame: pl.DataFrame  # keys + data + ROW_COLUMN, nothing else (data minimization)
    snapshot: bool = False
    kept: pl.DataFrame | None = None  # keys of quarantined rows a snapshot keeps active

    @property
    def sent(self) -> int:
        return self.frame.height


class _Phase:
    """What an attempt was doing when it failed, for error messages."""

    def __init__(self) -> None:
        self.name = "connect"


def _libpq_conninfo(url: str, target: str) -> str:
    # SQLAlchemy spells the driver into the scheme; libpq knows only postgresql://.
    conninfo = _DRIVER_SUFFIX.sub("postgresql://", url.strip())
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        # The message would quote the URL, password included: name the target only.
        raise ConfigError(f"target {target}: url is not a PostgreSQL connection URL") from None
    params.setdefault("connect_timeout", 10)
    params.setdefault("application_name", "batchbridge")
    # COPY sends polars' UTF-8 bytes as they are, whatever the server encoding is.
    params["client_encoding"] = "UTF8"
    return make_conninfo("", **params)


def _is_transient(exc: psycopg.Error, phase: str) -> bool:
    if exc.sqlstate is not None:
        return exc.sqlstate in _TRANSIENT_SQLSTATES or exc.sqlstate.startswith("08")
    if not isinstance(exc, psycopg.OperationalError):
        return False
    # No SQLSTATE: libpq lost or could not open the connection. A login the server
    # refused (bad password, unknown database) fails the same way on every try.
    return not (phase == "connect" and _PERMANENT_CONNECT.search(str(exc)))


class PostgresTarget:
    """Loads rows into `db_schema.table` on PostgreSQL, idempotently on (tenant, natural key).

    One transaction per load: create the table if missing, COPY the rows (CSV written
    by polars) into a temp table, upsert into the target where something changed,
    count what was inserted/updated, and confirm the keys are present. Only
    `columns` (plus the natural key and the source row number) are ever sent.
    Transient errors (connection lost, serialization failure, deadlock) are retried
    with a fresh connection; every other error is a TargetError naming the table and
    SQLSTATE but never a value (PostgreSQL's DETAIL lines quote row values).
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
        self.columns = tuple(dict.fromkeys(columns))
        reserved = sorted(_RESERVED.intersection(self.columns))
        if reserved:
            raise ConfigError(f"target {name}: columns {reserved} are reserved for lineage")
        if max_attempts < 1:
            raise ConfigError(f"target {name}: max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.retry_initial_wait = retry_initial_wait
        self.retry_max_wait = retry_max_wait
        self.copy_batch_rows = copy_batch_rows
        self.work_mem = work_mem
        secret = url if isinstance(url, SecretStr) else SecretStr(url)
        # Kept wrapped so a repr or a traceback's locals never show the password.
        self._conninfo = SecretStr(_libpq_conninfo(secret.get_secret_value(), name))
        self._conn: Connection | None = None
        self._target = sql.Identifier(db_schema, table)
        # One connection, one transaction at a time: Prefect task threads sharing this
        # target take turns instead of interleaving statements in one transaction.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"PostgresTarget(name={self.name!r}, table={self.db_schema}.{self.table})"

    # -- public API -----------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadResult:
        """Upsert `request.rows` in one transaction; retry only transient errors."""
        plan = self._plan(request)

        def work(cur: Cursor, phase: _Phase) -> LoadResult:
            if self.work_mem is not None:
                # Transaction-local: lets the key joins of a big load hash in memory.
                cur.execute("SELECT set_config('work_mem', %s, true)", (self.work_mem,))
            phase.name = "prepare table"
            self._ensure_table(cur, plan)
            phase.name = "copy rows to staging"
            self._stage(cur, plan.keys + plan.data + ("source_row",), plan.frame)
            crash_point("after_copy_before_upsert")
            phase.name = "upsert"
            inserted, updated = self._upsert(cur, plan, request)
            phase.name = "confirm"
            confirmed = self._count_staged_present(cur, request.tenant, plan.keys)
            inactivated = 0
            if plan.snapshot:
                phase.name = "mark absent records inactive"
                inactivated = self._mark_absent_inactive(cur, plan, request)
            crash_point("after_upsert_before_commit")
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

        return self._execute("load", work)

    def count_rows(self, tenant: str) -> int:
        """Rows of `tenant` in the table (0 when the table does not exist yet)."""
        query = sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
            self._target, sql.Identifier(TENANT_COLUMN)
        )
        return self._count_if_exists("count rows", query, (tenant,))

    def rows_for_load(self, load_id: str) -> int:
        """Rows whose current lineage is `load_id` (rows a later load changed move on)."""
        query = sql.SQL("SELECT count(*) FROM {} WHERE load_id = %s").format(self._target)
        return self._count_if_exists("count rows of load", query, (load_id,))

    def count_keys_present(self, tenant: str, keys: pl.DataFrame) -> int:
        """How many rows of `keys` (natural-key columns only) exist for `tenant`.

        Lets reconciliation re-confirm a load without loading again.
        """
        key_columns = tuple(keys.columns)
        if not key_columns:
            raise TargetError(f"target {self.name}: count_keys_present needs key columns")

        def work(cur: Cursor, phase: _Phase) -> int:
            if self._table_oid(cur) is None:
                return 0
            phase.name = "copy keys to staging"
            self._stage(cur, key_columns, _csv_ready(keys))
            phase.name = "count keys"
            return self._count_staged_present(cur, tenant, key_columns)

        return self._execute("count keys", work)

    def table_columns(self) -> list[str]:
        """Column names of the target table in order ([] when it does not exist)."""

        def work(cur: Cursor, phase: _Phase) -> list[str]:
            oid = self._table_oid(cur)
            return [] if oid is None else self._columns_of(cur, oid)

        return self._execute("list columns", work)

    def check_writable(self, tenant: str) -> datetime:
        """Upsert `tenant`'s row in `db_schema.batchbridge_health_canary`, read it back, commit.

        Proves, with the credentials loads use, that the server accepts a connection, a
        write and a commit. The row is kept (one per tenant): its `checked_at` is the last
        successful check, and a committed write is the stronger proof. Loaded tables are
        never touched. Retries like a load (transient errors only).
        """
        canary = sql.Identifier(self.db_schema, CANARY_TABLE)
        checked_at = datetime.now(UTC)  # microseconds: timestamptz keeps it exactly

        def work(cur: Cursor, phase: _Phase) -> datetime:
            phase.name = "prepare canary table"
            cur.execute(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                (self.db_schema, CANARY_TABLE),
            )
            if cur.fetchone() is None:
                # Two feeds' checks creating the table at once would collide on its row
                # type; the lock makes the second wait and find the table.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (CANARY_TABLE,))
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} "
                        "(tenant text PRIMARY KEY, checked_at timestamptz NOT NULL)"
                    ).format(canary)
                )
            phase.name = "write canary"
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (tenant, checked_at) VALUES (%s, %s) "
                    "ON CONFLICT (tenant) DO UPDATE SET checked_at = EXCLUDED.checked_at"
                ).format(canary),
                (tenant, checked_at),
            )
            phase.name = "read canary"
            cur.execute(
                sql.SQL("SELECT checked_at FROM {} WHERE tenant = %s").format(canary), (tenant,)
            )
            row = cur.fetchone()
            if row is None or row[0] != checked_at:
                raise TargetError(
                    f"target {self.name}: the canary row read back from "
                    f"{self.db_schema}.{CANARY_TABLE} differs from the one written"
                )
            phase.name = "commit"
            return checked_at

        return self._execute("health canary", work)

    def close(self) -> None:
        """Close the connection; the next call opens a new one."""
        with self._lock:
            self._discard_connection()

    def __enter__(self) -> PostgresTarget:
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
            frame=_csv_ready(checked.frame),
            snapshot=request.full_snapshot,
            kept=kept,
        )

    # -- statements -------------------------------------------------------------------

    def _table_oid(self, cur: Cursor) -> int | None:
        cur.execute(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (self.db_schema, self.table),
        )
        row = cur.fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _columns_of(cur: Cursor, oid: int) -> list[str]:
        cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum",
            (oid,),
        )
        return [str(row[0]) for row in cur.fetchall()]

    def _ensure_table(self, cur: Cursor, plan: _Plan) -> None:
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
            cur.execute(self._create_table_sql(plan))
            oid = self._table_oid(cur)
            assert oid is not None
        present = set(self._columns_of(cur, oid))
        expected = (TENANT_COLUMN, *plan.keys, *plan.data, *LINEAGE_COLUMNS)
        if plan.snapshot:
            expected += SNAPSHOT_COLUMNS
        missing = [c for c in expected if c not in present]
        if missing:
            raise TargetError(
                f"target {self.name}: table {self.db_schema}.{self.table} lacks columns "
                f"{missing}; add them (batchbridge does not alter existing tables)"
            )

    def _create_table_sql(self, plan: _Plan) -> sql.Composed:
        schema = plan.frame.schema
        definitions: list[sql.Composable] = [
            sql.SQL("{} text NOT NULL").format(sql.Identifier(TENANT_COLUMN))
        ]
        for column in plan.keys:
            definitions.append(
                sql.SQL("{} {} NOT NULL").format(
                    sql.Identifier(column), sql.SQL(postgres_type(column, schema[column]))
                )
            )
        for column in plan.data:
            definitions.append(
                sql.SQL("{} {}").format(
                    sql.Identifier(column), sql.SQL(postgres_type(column, schema[column]))
                )
            )
        definitions += [
            sql.SQL("load_id text NOT NULL"),
            sql.SQL("file_id text NOT NULL"),
            sql.SQL("source_row integer NOT NULL"),
            sql.SQL("loaded_at timestamptz NOT NULL"),
        ]
        if plan.snapshot:
            definitions += [
                sql.SQL("active boolean NOT NULL DEFAULT true"),
                sql.SQL("inactivated_by_load text"),
                sql.SQL("inactivated_at timestamptz"),
            ]
        definitions += [
            sql.SQL("PRIMARY KEY ({})").format(_idents((TENANT_COLUMN, *plan.keys))),
        ]
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            self._target, sql.SQL(", ").join(definitions)
        )

    def _stage(self, cur: Cursor, columns: tuple[str, ...], frame: pl.DataFrame) -> None:
        """Create the temp staging table with the target's own column types and COPY into it.

        Taking the types from the target (not from polars) makes the server parse the CSV
        straight into them, so the upsert needs no casts and an older table still works.
        """
        source = [sql.Identifier(c) for c in columns]
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                sql.Identifier(_STAGE_NAME),
                sql.SQL(", ").join(source),
                self._target,
            )
        )
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            _STAGE, sql.SQL(", ").join(source)
        )
        # Batches bound the memory to one CSV slice. (psycopg's QueuedLibpqWriter,
        # sending from a thread, measured no faster on 2 cores and used ~100 MB more.)
        crash_point("before_copy")
        with cur.copy(copy_sql) as copy:
            for offset in range(0, frame.height, self.copy_batch_rows):
                buffer = io.BytesIO()
                # Every string is quoted, nulls are bare empty fields: PostgreSQL's CSV
                # reads "" as an empty string and an unquoted empty field as NULL, and a
                # quoted \. can never be mistaken for the end-of-data marker.
                frame.slice(offset, self.copy_batch_rows).write_csv(
                    buffer,
                    include_header=False,
                    quote_style="non_numeric",
                    datetime_format="%Y-%m-%dT%H:%M:%S%.6f+00:00",
                )
                copy.write(buffer.getbuffer())
                crash_point("mid_copy")

    def _upsert(self, cur: Cursor, plan: _Plan, request: LoadRequest) -> tuple[int, int]:
        cur.execute(
            self._upsert_sql(plan),
            {"tenant": request.tenant, "load_id": request.load_id, "file_id": request.file_id},
        )
        row = cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def _upsert_sql(self, plan: _Plan) -> sql.Composed:
        target_columns = (TENANT_COLUMN, *plan.keys, *plan.data, *LINEAGE_COLUMNS)
        selected = [
            sql.Placeholder("tenant"),
            *(sql.Identifier("s", c) for c in (*plan.keys, *plan.data)),
            sql.Placeholder("load_id"),
            sql.Placeholder("file_id"),
            sql.Identifier("s", "source_row"),
            sql.SQL("now()"),
        ]
        assignments: list[sql.Composable] = [
            sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("excluded", c))
            for c in (*plan.data, *LINEAGE_COLUMNS)
        ]
        conditions: list[sql.Composable] = []
        if plan.data:
            conditions.append(
                sql.SQL("({}) IS DISTINCT FROM ({})").format(
                    sql.SQL(", ").join(sql.Identifier("t", c) for c in plan.data),
                    sql.SQL(", ").join(sql.Identifier("excluded", c) for c in plan.data),
                )
            )
        if plan.snapshot:
            # A record back in a full file is current again.
            assignments.append(
                sql.SQL("active = true, inactivated_by_load = NULL, inactivated_at = NULL")
            )
            conditions.append(sql.SQL("NOT t.active"))
        if conditions:
            # Lineage moves only with the data: an unchanged row keeps the load that
            # wrote it, so loading the same file twice changes nothing at all.
            on_conflict: sql.Composable = sql.SQL("DO UPDATE SET {} WHERE {}").format(
                sql.SQL(", ").join(assignments), sql.SQL(" OR ").join(conditions)
            )
        else:
            on_conflict = sql.SQL("DO NOTHING")
        # xmax is 0 on a freshly inserted row version and set on an updated one; the
        # CTE keeps RETURNING server-side so only two counts cross the network.
        return sql.SQL(
            "WITH upserted AS ("
            "INSERT INTO {target} AS t ({columns}) SELECT {selected} FROM {stage} AS s "
            "ON CONFLICT ({conflict}) {on_conflict} RETURNING (t.xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) "
            "FROM upserted"
        ).format(
            target=self._target,
            columns=_idents(target_columns),
            selected=sql.SQL(", ").join(selected),
            stage=_STAGE,
            conflict=_idents((TENANT_COLUMN, *plan.keys)),
            on_conflict=on_conflict,
        )

    def _mark_absent_inactive(self, cur: Cursor, plan: _Plan, request: LoadRequest) -> int:
        """Mark the tenant's active records that this full file lacks inactive; their count.

        Keys of the file's quarantined rows (`plan.kept`) are still current records.
        """
        kept_columns = [sql.SQL("{} text").format(sql.Identifier(k)) for k in plan.keys]
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                sql.Identifier(_KEPT_NAME), sql.SQL(", ").join(kept_columns)
            )
        )
        kept_table = sql.Identifier("pg_temp", _KEPT_NAME)
        if plan.kept is not None and plan.kept.height:
            with cur.copy(
                sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                    kept_table, _idents(plan.keys)
                )
            ) as copy:
                buffer = io.BytesIO()
                plan.kept.write_csv(buffer, include_header=False, quote_style="non_numeric")
                copy.write(buffer.getbuffer())
        in_file = sql.SQL(" AND ").join(
            sql.SQL("s.{0} = t.{0}").format(sql.Identifier(k)) for k in plan.keys
        )
        in_kept = sql.SQL(" AND ").join(
            sql.SQL("k.{0} = t.{0}::text").format(sql.Identifier(k)) for k in plan.keys
        )
        cur.execute(
            sql.SQL(
                "UPDATE {target} AS t SET active = false, inactivated_by_load = %(load_id)s, "
                "inactivated_at = now() WHERE t.{tenant} = %(tenant)s AND t.active "
                "AND NOT EXISTS (SELECT 1 FROM {stage} AS s WHERE {in_file}) "
                "AND NOT EXISTS (SELECT 1 FROM {kept} AS k WHERE {in_kept})"
            ).format(
                target=self._target,
                tenant=sql.Identifier(TENANT_COLUMN),
                stage=_STAGE,
                in_file=in_file,
                kept=kept_table,
                in_kept=in_kept,
            ),
            {"load_id": request.load_id, "tenant": request.tenant},
        )
        return max(cur.rowcount, 0)

    def _count_staged_present(self, cur: Cursor, tenant: str, keys: tuple[str, ...]) -> int:
        join = sql.SQL(" AND ").join(
            [
                sql.SQL("t.{} = %s").format(sql.Identifier(TENANT_COLUMN)),
                *(sql.SQL("t.{0} = s.{0}").format(sql.Identifier(column)) for column in keys),
            ]
        )
        cur.execute(
            sql.SQL("SELECT count(*) FROM {} AS t JOIN {} AS s ON {}").format(
                self._target, _STAGE, join
            ),
            (tenant,),
        )
        row = cur.fetchone()
        assert row is not None
        return int(row[0])

    def _count_if_exists(self, action: str, query: sql.Composed, params: tuple[str]) -> int:
        def work(cur: Cursor, phase: _Phase) -> int:
            if self._table_oid(cur) is None:
                return 0
            phase.name = action
            cur.execute(query, params)
            row = cur.fetchone()
            assert row is not None
            return int(row[0])

        return self._execute(action, work)

    # -- connection, transaction, retries ---------------------------------------------

    def _execute(self, action: str, work: Callable[[Cursor, _Phase], T]) -> T:
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            # multiplier is the first wait (tenacity 9.2 renamed `initial` to it).
            wait=wait_exponential_jitter(
                multiplier=self.retry_initial_wait,
                max=self.retry_max_wait,
                jitter=self.retry_initial_wait,
            ),
            retry=retry_if_exception_type(TransientTargetError),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            with self._lock:
                result: T = retrying(self._attempt, action, work)
            return result
        except TransientTargetError as exc:
            raise TransientTargetError(
                f"{exc} (gave up after {self.max_attempts} attempts)"
            ) from None

    def _attempt(self, action: str, work: Callable[[Cursor, _Phase], T]) -> T:
        phase = _Phase()
        try:
            conn = self._connection()
            phase.name = "begin"
            with conn.transaction(), conn.cursor() as cur:
                return work(cur, phase)
        except psycopg.Error as exc:
            transient = _is_transient(exc, phase.name)
            if transient or self._conn is None or self._conn.broken:
                # Reconnect on the next attempt rather than reuse a suspect session.
                self._discard_connection()
            error = TransientTargetError if transient else TargetError
            # `from None`: psycopg's own message quotes row values in its DETAIL line.
            raise error(self._describe(action, phase.name, exc)) from None

    def _describe(self, action: str, phase: str, exc: psycopg.Error) -> str:
        where = f"{self.db_schema}.{self.table}"
        text = f"target {self.name}: {action} on {where} failed at {phase}: {type(exc).__name__}"
        if exc.sqlstate is not None:
            # Server errors: only the code and the names of the objects involved.
            text += f" (SQLSTATE {exc.sqlstate})"
            for label, value in (
                ("constraint", exc.diag.constraint_name),
                ("column", exc.diag.column_name),
            ):
                if value:
                    text += f", {label} {value}"
        else:
            # Client-side (libpq) messages carry no row data: host, port, the cause.
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            text += f": {first_line[:300]}"
        return text

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "%s; attempt %d of %d, retrying in %.2fs",
            exc,
            state.attempt_number,
            self.max_attempts,
            wait,
        )

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


def _idents(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """Normalize dtypes so polars' CSV is what PostgreSQL parses back to the same value."""
    conversions: list[pl.Expr] = []
    for column, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            # One zone and microseconds (PostgreSQL's precision) for the fixed format.
            conversions.append(pl.col(column).dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        elif isinstance(dtype, pl.Datetime):
            raise TargetError(f"column {column!r} is a naive Datetime; convert it to UTC first")
        elif dtype == pl.Categorical or isinstance(dtype, pl.Enum):
            conversions.append(pl.col(column).cast(pl.String))
    return frame.with_columns(conversions) if conversions else frame
