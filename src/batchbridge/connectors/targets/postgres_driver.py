"""psycopg specifics of the PostgreSQL target: connection URL, column types, the dialect,
COPY, which errors a retry may cure, and what may be said of an error."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence

import polars as pl
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from batchbridge.connectors.targets.sql_plan import Params, SqlDialect, idents
from batchbridge.errors import ConfigError, TargetError

__all__ = [
    "POSTGRES",
    "CopySession",
    "csv_ready",
    "error_detail",
    "is_transient",
    "libpq_conninfo",
    "postgres_type",
    "write_copy_csv",
]

Cursor = psycopg.Cursor[TupleRow]

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
_CSV_DATETIME = "%Y-%m-%dT%H:%M:%S%.6f+00:00"


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


POSTGRES = SqlDialect(
    column_type=postgres_type,
    text="text",
    integer="integer",
    timestamp="timestamptz",
    boolean="boolean",
    true="true",
    false="false",
    now="now()",  # the transaction's start: one time for every row of a load
    differs="IS DISTINCT FROM",
    # Qualified so a permanent table of the same name on the search_path is never hit.
    temp_schema="pg_temp",
    temp_options=" ON COMMIT DROP",
    param_style="%({})s",
)


def libpq_conninfo(url: str, target: str) -> str:
    """libpq connection string for a PostgreSQL (or SQLAlchemy-style) URL, with our defaults."""
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


def is_transient(exc: psycopg.Error, phase: str) -> bool:
    """Whether a fresh connection and another try may cure `exc` (raised during `phase`)."""
    if exc.sqlstate is not None:
        return exc.sqlstate in _TRANSIENT_SQLSTATES or exc.sqlstate.startswith("08")
    if not isinstance(exc, psycopg.OperationalError):
        return False
    # No SQLSTATE: libpq lost or could not open the connection. A login the server
    # refused (bad password, unknown database) fails the same way on every try.
    return not (phase == "connect" and _PERMANENT_CONNECT.search(str(exc)))


class CopySession:
    """The shared SQL steps over one psycopg cursor inside a transaction."""

    def __init__(self, cur: Cursor, copy_batch_rows: int) -> None:
        self.cur = cur
        self.copy_batch_rows = copy_batch_rows

    def execute(self, statement: str, params: Params | None = None) -> int:
        self.cur.execute(statement, params)
        return max(self.cur.rowcount, 0)

    def count(self, statement: str, params: Params) -> int:
        self.cur.execute(statement, params)
        row = self.cur.fetchone()
        assert row is not None
        return int(row[0])

    def value(self, statement: str, params: Params) -> object:
        self.cur.execute(statement, params)
        row = self.cur.fetchone()
        return None if row is None else row[0]

    def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        frame: pl.DataFrame,
        after_batch: Callable[[], None] = lambda: None,
    ) -> None:
        """COPY `frame` (made CSV-ready by `csv_ready`) into `table`, one slice at a time."""
        # Batches bound the memory to one CSV slice. (psycopg's QueuedLibpqWriter,
        # sending from a thread, measured no faster on 2 cores and used ~100 MB more.)
        with self.cur.copy(f"COPY {table} ({idents(columns)}) FROM STDIN (FORMAT csv)") as copy:
            for offset in range(0, frame.height, self.copy_batch_rows):
                write_copy_csv(copy, frame.slice(offset, self.copy_batch_rows))
                after_batch()


def write_copy_csv(copy: psycopg.Copy, frame: pl.DataFrame) -> None:
    """Send `frame` (CSV-ready, see `csv_ready`) as CSV into an open `COPY ... FROM STDIN`."""
    buffer = io.BytesIO()
    # Every string is quoted, nulls are bare empty fields: PostgreSQL's CSV reads "" as
    # an empty string and an unquoted empty field as NULL, and a quoted \. can never be
    # mistaken for the end-of-data marker.
    frame.write_csv(
        buffer, include_header=False, quote_style="non_numeric", datetime_format=_CSV_DATETIME
    )
    copy.write(buffer.getbuffer())


def error_detail(exc: psycopg.Error) -> str:
    """What may be said of a psycopg error: its class, SQLSTATE and object names."""
    text = type(exc).__name__
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


def csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
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
