"""The SQL plan carried out: a session protocol, the shared steps of a load, and the part of
the public API the PostgreSQL and SQLite targets have in common.

Each target opens its own session (psycopg with COPY, or sqlite3 with executemany) and
runs units of work its own way (PostgreSQL: retried on a fresh connection; SQLite: an
IMMEDIATE transaction on one file); what they do inside is written here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

import polars as pl

from batchbridge.connectors.lifecycle import ClosedOnExit
from batchbridge.connectors.targets.sql_plan import Params, SqlPlan, SqlStatements
from batchbridge.errors import TargetError

T = TypeVar("T")


class Phase:
    """What a unit of work was doing when it failed, for error messages."""

    def __init__(self, name: str) -> None:
        self.name = name


def describe_failure(target: str, action: str, where: str, phase: Phase, detail: str) -> str:
    """The PHI-free text of a failed unit of work: target, table, step and the driver's code."""
    return f"target {target}: {action} on {where} failed at {phase.name}: {detail}"


class SqlSession(Protocol):
    """One open transaction of a SQL target, as the shared steps use it."""

    def execute(self, statement: str, params: Params | None = None) -> int:
        """Run one statement; the number of rows it changed (0 if it says none)."""
        ...

    def count(self, statement: str, params: Params) -> int:
        """The single number a `SELECT count(*)` statement answers."""
        ...

    def value(self, statement: str, params: Params) -> object:
        """The first column of the first row a query answers (None for no row)."""
        ...

    def insert_rows(self, table: str, columns: Sequence[str], frame: pl.DataFrame) -> None:
        """Bulk-insert `frame`, whose columns are `columns` in order, into `table`."""
        ...


S = TypeVar("S", bound=SqlSession)


def stage_rows(
    session: SqlSession, sql: SqlStatements, columns: Sequence[str], frames: Iterable[pl.DataFrame]
) -> None:
    """Create the staging table for `columns` and fill it with `frames`, one after another."""
    session.execute(sql.create_stage(columns))
    for frame in frames:
        session.insert_rows(sql.stage, columns, frame)


def refuse_repeated_keys(
    session: SqlSession, sql: SqlStatements, plan: SqlPlan, target: str
) -> None:
    """A chunked load's keys must be unique across its chunks too (each was checked alone).

    Validation guarantees it; this keeps a bug upstream from letting one copy win silently.
    """
    if plan.chunks is not None and session.count(sql.repeated_keys(plan.keys), {}):
        raise TargetError(
            f"target {target}: rows of one load share a natural key ({', '.join(plan.keys)}) "
            "across chunks; the validation stage guarantees unique keys, so the load is refused"
        )


def mark_absent_inactive(
    session: SqlSession, sql: SqlStatements, plan: SqlPlan, params: Params
) -> int:
    """Mark the tenant's active records that this full file lacks inactive; their count.

    Runs after the rows are staged and upserted. Keys of the file's quarantined rows
    (`plan.kept`) are still current records. Records are never deleted.
    """
    session.execute(sql.create_kept(plan.keys))
    if plan.kept is not None and plan.kept.height:
        session.insert_rows(sql.kept, plan.keys, plan.kept)
    changed = session.execute(sql.mark_absent(plan.keys), params)
    session.execute(sql.drop(sql.kept))
    return max(changed, 0)


class SqlTarget(ClosedOnExit, ABC, Generic[S]):
    """What the SQL targets answer alike, over the units of work each runs its own way."""

    name: str
    sql: SqlStatements
    accepts_chunks = True
    """Loads take a streamed file's rows chunk by chunk (LoadRequest.chunks)."""

    @abstractmethod
    def _run(self, action: str, work: Callable[[S, Phase], T], *, write: bool) -> T:
        """Run `work` in one transaction; a driver error becomes a PHI-free TargetError."""

    @abstractmethod
    def _table_exists(self, session: S) -> bool:
        """Whether the target table exists yet."""

    @abstractmethod
    def _prepare_canary(self, session: S) -> None:
        """Create the health canary table if it is missing."""

    @abstractmethod
    def _canary_stamp(self, checked_at: datetime) -> object:
        """`checked_at` as the canary table stores it (read back, it must compare equal)."""

    @property
    @abstractmethod
    def _canary_where(self) -> str:
        """Where the canary table is, for error messages."""

    def check_writable(self, tenant: str) -> datetime:
        """Upsert `tenant`'s row in the health canary table, read it back, commit.

        Proves, with the credentials loads use, that the database accepts a connection,
        a write and a commit. The row is kept (one per tenant): its `checked_at` is the
        last successful check, and a committed write is the stronger proof. Loaded
        tables are never touched. Retried like a load, if the target retries.
        """
        checked_at = datetime.now(UTC)
        params = {"tenant": tenant, "checked_at": self._canary_stamp(checked_at)}

        def work(session: S, phase: Phase) -> datetime:
            phase.name = "prepare canary table"
            self._prepare_canary(session)
            phase.name = "write canary"
            session.execute(self.sql.write_canary(), params)
            phase.name = "read canary"
            if session.value(self.sql.read_canary(), params) != params["checked_at"]:
                raise TargetError(
                    f"target {self.name}: the canary row read back from "
                    f"{self._canary_where} differs from the one written"
                )
            phase.name = "commit"
            return checked_at

        return self._run("health canary", work, write=True)

    def count_rows(self, tenant: str) -> int:
        """Rows of `tenant` in the table (0 when the table does not exist yet)."""
        return self._count_if_exists("count rows", self.sql.count_rows(), {"tenant": tenant})

    def rows_for_load(self, load_id: str) -> int:
        """Rows whose current lineage is `load_id` (rows a later load changed move on)."""
        query = self.sql.count_rows_of_load()
        return self._count_if_exists("count rows of load", query, {"load_id": load_id})

    def _count_if_exists(self, action: str, query: str, params: Params) -> int:
        def work(session: S, phase: Phase) -> int:
            if not self._table_exists(session):
                return 0
            phase.name = action
            return session.count(query, params)

        return self._run(action, work, write=False)
