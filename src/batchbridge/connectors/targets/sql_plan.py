"""One SQL plan for the PostgreSQL and SQLite targets: what a load writes, and the statements.

Both targets keep a table per feed keyed by (tenant, natural key) with lineage columns,
stage a load's rows in a temporary table, upsert where something changed, confirm the
keys, and, for a full snapshot, mark the tenant's records missing from the file inactive.
That is written once: here what is said (the plan and the statements, no I/O; an
`SqlDialect` holds the few words the two databases spell differently), in sql_target.py
how it is done over a session each target opens with its own driver.

Identifiers are double-quoted with embedded quotes doubled (the rule of both databases);
every value is a named parameter, never part of the text.
"""

# S608: the statements are built from identifiers passed through `quote` only.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import polars as pl

from batchbridge.connectors.targets.base import LoadRequest, LoadResult
from batchbridge.connectors.targets.rows import SNAPSHOT_COLUMNS, check_load_request
from batchbridge.errors import ConfigError, TargetError
from batchbridge.validations.base import ROW_COLUMN

TENANT_COLUMN = "tenant"
LINEAGE_COLUMNS = ("load_id", "file_id", "source_row", "loaded_at")
"""Added to every row: which load wrote it, from which file and record, and when."""

RESERVED_COLUMNS = frozenset({TENANT_COLUMN, *LINEAGE_COLUMNS, *SNAPSHOT_COLUMNS, ROW_COLUMN})
STAGE_TABLE = "_batchbridge_stage"
KEPT_TABLE = "_batchbridge_kept"

Params = Mapping[str, object]
"""Named statement parameters."""


def quote(identifier: str) -> str:
    """`identifier` as a quoted SQL identifier (PostgreSQL and SQLite alike)."""
    return '"' + identifier.replace('"', '""') + '"'


def idents(columns: Iterable[str], prefix: str = "") -> str:
    """Quoted identifiers separated by commas, each after `prefix` (such as 't.')."""
    return ", ".join(prefix + quote(c) for c in columns)


def configured_columns(target: str, columns: Sequence[str]) -> tuple[str, ...]:
    """The configured data columns, once each; ConfigError if one is reserved for lineage."""
    unique = tuple(dict.fromkeys(columns))
    reserved = sorted(RESERVED_COLUMNS.intersection(unique))
    if reserved:
        raise ConfigError(f"target {target}: columns {reserved} are reserved for lineage")
    return unique


def require_columns(
    target: str, where: str, expected: Sequence[str], present: Iterable[str]
) -> None:
    """TargetError naming the columns of `expected` an existing table lacks."""
    have = set(present)
    missing = [c for c in expected if c not in have]
    if missing:
        raise TargetError(
            f"target {target}: table {where} lacks columns {missing}; "
            "add them (batchbridge does not alter existing tables)"
        )


@dataclass(frozen=True)
class SqlPlan:
    """A request reduced to what this target may receive."""

    keys: tuple[str, ...]
    data: tuple[str, ...]
    frame: pl.DataFrame  # keys + data + ROW_COLUMN, nothing else (data minimization)
    snapshot: bool = False
    kept: pl.DataFrame | None = None  # keys (as text) of quarantined rows a snapshot keeps
    chunks: Callable[[], Iterator[pl.DataFrame]] | None = None
    """For a chunked request: its rows, checked and prepared chunk by chunk (`frame` is
    then empty and gives only the columns and types)."""
    chunked_rows: int = 0

    @property
    def sent(self) -> int:
        return self.frame.height if self.chunks is None else self.chunked_rows

    def frames(self) -> Iterator[pl.DataFrame]:
        """The rows to stage, whole or a chunk at a time."""
        if self.chunks is None:
            yield self.frame
        else:
            yield from self.chunks()

    @property
    def staged(self) -> tuple[str, ...]:
        """Staging table columns, in the frame's order (the row number becomes source_row)."""
        return (*self.keys, *self.data, "source_row")

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the target table must have for this load."""
        base = (TENANT_COLUMN, *self.keys, *self.data, *LINEAGE_COLUMNS)
        return (*base, *SNAPSHOT_COLUMNS) if self.snapshot else base

    def result(
        self,
        target: str,
        load_id: str,
        *,
        inserted: int,
        updated: int,
        confirmed: int,
        inactivated: int,
    ) -> LoadResult:
        """What the load did: every row sent and neither inserted nor updated is unchanged."""
        return LoadResult(
            target=target,
            load_id=load_id,
            rows_inserted=inserted,
            rows_updated=updated,
            rows_unchanged=self.sent - inserted - updated,
            rows_rejected=0,
            rows_confirmed=confirmed,
            rows_inactivated=inactivated,
        )


def plan_load(
    target: str,
    request: LoadRequest,
    columns: Sequence[str],
    prepare: Callable[[pl.DataFrame], pl.DataFrame] = lambda frame: frame,
) -> SqlPlan:
    """Check `request` (no database needed) and keep only what the target may receive.

    `prepare` converts the rows for the driver up front, so a value it cannot send fails
    before any connection is made.
    """
    checked = check_load_request(target, request, columns, RESERVED_COLUMNS)
    kept = None
    if request.full_snapshot and request.kept_keys is not None:
        kept = request.kept_keys.select([pl.col(k).cast(pl.String) for k in checked.keys]).unique()
    source = request.chunks

    def chunks() -> Iterator[pl.DataFrame]:
        assert source is not None
        for frame in source.frames():
            one = replace(request, rows=frame, chunks=None)
            yield prepare(check_load_request(target, one, columns, RESERVED_COLUMNS).frame)

    return SqlPlan(
        keys=checked.keys,
        data=checked.data,
        frame=prepare(checked.frame),
        snapshot=request.full_snapshot,
        kept=kept,
        chunks=None if source is None else chunks,
        chunked_rows=0 if source is None else source.height,
    )


@dataclass(frozen=True)
class SqlDialect:
    """The words PostgreSQL and SQLite spell differently in the statements below."""

    column_type: Callable[[str, pl.DataType], str]
    """Declared type of a new table's column for a polars dtype (TargetError if none fits)."""
    text: str
    integer: str
    timestamp: str
    boolean: str
    true: str
    false: str
    now: str
    """The load's timestamp: a server function or a named parameter."""
    differs: str
    """Null-safe inequality of two row values."""
    temp_schema: str
    """Where temporary tables live, so a permanent table of the same name is never hit."""
    temp_options: str
    """Appended to CREATE TEMP TABLE (PostgreSQL: dropped at commit whatever happens)."""
    param_style: str
    """How a named parameter is written, with {} for its name."""

    def param(self, name: str) -> str:
        return self.param_style.format(name)

    def temp(self, name: str) -> str:
        return f"{quote(self.temp_schema)}.{quote(name)}"


class SqlStatements:
    """The statements of one target table, in one dialect."""

    def __init__(self, dialect: SqlDialect, table: str, canary: str) -> None:
        self.dialect = dialect
        self.table = table  # quoted and qualified
        self.canary = canary  # the health check's table (CANARY_TABLE), quoted and qualified
        self.stage = dialect.temp(STAGE_TABLE)
        self.kept = dialect.temp(KEPT_TABLE)

    def create_table(self, plan: SqlPlan) -> str:
        d, schema = self.dialect, plan.frame.schema
        # NOT NULL on the key is explicit: SQLite, unlike PostgreSQL, lets NULL into a
        # PRIMARY KEY column of an ordinary table.
        definitions = [f"{quote(TENANT_COLUMN)} {d.text} NOT NULL"]
        definitions += [f"{quote(c)} {d.column_type(c, schema[c])} NOT NULL" for c in plan.keys]
        definitions += [f"{quote(c)} {d.column_type(c, schema[c])}" for c in plan.data]
        definitions += [
            f"load_id {d.text} NOT NULL",
            f"file_id {d.text} NOT NULL",
            f"source_row {d.integer} NOT NULL",
            f"loaded_at {d.timestamp} NOT NULL",
        ]
        if plan.snapshot:
            definitions += [
                f"active {d.boolean} NOT NULL DEFAULT {d.true}",
                f"inactivated_by_load {d.text}",
                f"inactivated_at {d.timestamp}",
            ]
        definitions.append(f"PRIMARY KEY ({idents((TENANT_COLUMN, *plan.keys))})")
        return f"CREATE TABLE IF NOT EXISTS {self.table} ({', '.join(definitions)})"

    def create_stage(self, columns: Sequence[str]) -> str:
        """An empty temp table with the target's own column types for `columns`.

        Taking the types from the target makes staged values compare like with like
        (PostgreSQL parses the CSV straight into them; SQLite stores the same affinity).
        """
        return (
            f"CREATE TEMP TABLE {quote(STAGE_TABLE)}{self.dialect.temp_options} AS "
            f"SELECT {idents(columns)} FROM {self.table} WHERE false"
        )

    def upsert(self, plan: SqlPlan) -> str:
        """INSERT the staged rows; on a key already there, UPDATE only if something changed.

        Parameters: tenant, load_id, file_id (and the dialect's `now`, if a parameter).
        """
        d = self.dialect
        columns = (TENANT_COLUMN, *plan.keys, *plan.data, *LINEAGE_COLUMNS)
        selected = [d.param("tenant"), idents((*plan.keys, *plan.data), "s.")]
        selected += [d.param("load_id"), d.param("file_id"), "s.source_row", d.now]
        assignments = [f"{quote(c)} = excluded.{quote(c)}" for c in (*plan.data, *LINEAGE_COLUMNS)]
        conditions = []
        if plan.data:
            old, new = idents(plan.data, "t."), idents(plan.data, "excluded.")
            conditions.append(f"({old}) {d.differs} ({new})")
        if plan.snapshot:
            # A record back in a full file is current again.
            assignments.append(
                f"active = {d.true}, inactivated_by_load = NULL, inactivated_at = NULL"
            )
            conditions.append(f"t.active = {d.false}")
        if conditions:
            # Lineage moves only with the data: an unchanged row keeps the load that
            # wrote it, so loading the same file twice changes nothing at all.
            on_conflict = f"DO UPDATE SET {', '.join(assignments)} WHERE {' OR '.join(conditions)}"
        else:
            on_conflict = "DO NOTHING"
        # "WHERE true" is required: without it SQLite parses ON CONFLICT as a join's ON.
        return (
            f"INSERT INTO {self.table} AS t ({idents(columns)}) SELECT {', '.join(selected)} "
            f"FROM {self.stage} AS s WHERE true "
            f"ON CONFLICT ({idents((TENANT_COLUMN, *plan.keys))}) {on_conflict}"
        )

    def count_present(self, keys: Sequence[str]) -> str:
        """How many staged keys the table holds for the `tenant` parameter."""
        join = " AND ".join(
            [
                f"t.{quote(TENANT_COLUMN)} = {self.dialect.param('tenant')}",
                *(f"t.{quote(k)} = s.{quote(k)}" for k in keys),
            ]
        )
        return f"SELECT count(*) FROM {self.table} AS t JOIN {self.stage} AS s ON {join}"

    def repeated_keys(self, keys: Sequence[str]) -> str:
        """How many keys occur more than once in the stage (chunks are checked one by one)."""
        return (
            f"SELECT count(*) FROM (SELECT 1 FROM {self.stage} "
            f"GROUP BY {idents(keys)} HAVING count(*) > 1) AS repeated"
        )

    def delete_staged(self, key: str) -> str:
        """Delete the staged rows whose `key` is in the `keys` parameter (PostgreSQL: a list)."""
        return f"DELETE FROM {self.stage} WHERE {quote(key)} = ANY({self.dialect.param('keys')})"

    def count_rows(self) -> str:
        """Rows of the `tenant` parameter."""
        return (
            f"SELECT count(*) FROM {self.table} "
            f"WHERE {quote(TENANT_COLUMN)} = {self.dialect.param('tenant')}"
        )

    def count_rows_of_load(self) -> str:
        """Rows whose current lineage is the `load_id` parameter."""
        return f"SELECT count(*) FROM {self.table} WHERE load_id = {self.dialect.param('load_id')}"

    def drop(self, table: str) -> str:
        return f"DROP TABLE {table}"

    def create_canary(self) -> str:
        d = self.dialect
        return (
            f"CREATE TABLE IF NOT EXISTS {self.canary} "
            f"(tenant {d.text} PRIMARY KEY NOT NULL, checked_at {d.timestamp} NOT NULL)"
        )

    def write_canary(self) -> str:
        """Upsert the `tenant` parameter's row with the `checked_at` parameter."""
        d = self.dialect
        return (
            f"INSERT INTO {self.canary} (tenant, checked_at) "
            f"VALUES ({d.param('tenant')}, {d.param('checked_at')}) "
            "ON CONFLICT (tenant) DO UPDATE SET checked_at = excluded.checked_at"
        )

    def read_canary(self) -> str:
        return f"SELECT checked_at FROM {self.canary} WHERE tenant = {self.dialect.param('tenant')}"

    def create_kept(self, keys: Sequence[str]) -> str:
        columns = ", ".join(f"{quote(k)} {self.dialect.text}" for k in keys)
        return f"CREATE TEMP TABLE {quote(KEPT_TABLE)} ({columns}){self.dialect.temp_options}"

    def mark_absent(self, keys: Sequence[str]) -> str:
        """Mark the tenant's active records in neither the stage nor the kept keys inactive.

        Parameters: tenant, load_id (and the dialect's `now`, if a parameter).
        """
        d = self.dialect
        in_file = " AND ".join(f"s.{quote(k)} = t.{quote(k)}" for k in keys)
        # The kept keys are text (they come from the file as read): compare as text.
        in_kept = " AND ".join(f"k.{quote(k)} = CAST(t.{quote(k)} AS {d.text})" for k in keys)
        return (
            f"UPDATE {self.table} AS t SET active = {d.false}, "
            f"inactivated_by_load = {d.param('load_id')}, inactivated_at = {d.now} "
            f"WHERE t.{quote(TENANT_COLUMN)} = {d.param('tenant')} AND t.active = {d.true} "
            f"AND NOT EXISTS (SELECT 1 FROM {self.stage} AS s WHERE {in_file}) "
            f"AND NOT EXISTS (SELECT 1 FROM {self.kept} AS k WHERE {in_kept})"
        )
