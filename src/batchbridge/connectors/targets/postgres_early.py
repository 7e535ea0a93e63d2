"""PostgresTarget's early stages: opened before a file streams, finished by its load.

Two kinds (targets.early_stage has the thread that feeds them):
- **upsert as it goes** (`scope` given: tenant and file known, the feed is not a full
  snapshot): each chunk is COPYed into a small temp table and upserted into the target
  right away, in the one transaction the load commits at the end. Rows whose key
  turns out repeated at the end were upserted already: the load deletes what they
  inserted and puts back what they updated (`_undo_dropped`). PostgreSQL does the
  upserts on the other core while the next chunk is validated, and no stage of the
  whole file is ever written.
- **stage only**: the chunks are COPYed into one temp stage and the load upserts it at
  the end (full-snapshot feeds, whose load also marks the absent records).

Either way nothing is visible before the load commits, and any failure sends the load
down the ordinary path (`PostgresTarget.load` from the rows), which is idempotent.
"""

# ruff: noqa: S608  (identifiers quoted by sql_plan, values bound as parameters)

from __future__ import annotations

import contextlib
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import polars as pl
import psycopg
from psycopg.rows import TupleRow
from pydantic import SecretStr

from batchbridge.connectors.targets.base import LoadRequest, LoadResult
from batchbridge.connectors.targets.early_stage import EarlyStage, StagedSession, stage_ddl
from batchbridge.connectors.targets.postgres_driver import (
    CopySession,
    csv_ready,
    error_detail,
    postgres_type,
)
from batchbridge.connectors.targets.rows import check_load_request
from batchbridge.connectors.targets.sql_plan import (
    RESERVED_COLUMNS,
    STAGE_TABLE,
    Params,
    SqlPlan,
    SqlStatements,
    idents,
    plan_load,
    quote,
)
from batchbridge.connectors.targets.sql_target import Phase
from batchbridge.errors import TargetError
from batchbridge.validations.base import ROW_COLUMN
from batchbridge.validations.transform import select_target_columns

logger = logging.getLogger(__name__)

Cursor = psycopg.Cursor[TupleRow]


@dataclass(frozen=True)
class MergeScope:
    """Who a file's rows belong to, so its chunks can be upserted while it streams."""

    tenant: str
    file_id: str


@dataclass
class _Merged:
    """What the upserts made so far while the file streamed."""

    plan: SqlPlan
    params: dict[str, object]
    inserted: int = 0
    updated: int = 0
    confirmed: int = 0


class PostgresEarlyStage(EarlyStage):
    """An early stage of a PostgresTarget, with what its upserts made so far (if any)."""

    merged: list[_Merged]


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
    def _upsert(self, cur: Cursor, plan: SqlPlan, params: Params) -> tuple[int, int]: ...

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
        merged: tuple[int, int, int] | None = None,
    ) -> LoadResult: ...

    def open_early_stage(
        self,
        natural_key: Sequence[str],
        columns: Sequence[str],
        scope: MergeScope | None = None,
    ) -> PostgresEarlyStage:
        """A stage for a streamed file's rows that fills while the file is read.

        `columns` are the target's columns as `load_into_targets` selects them; with
        `scope`, the stage upserts as it goes (see the module docstring).
        """
        keys = tuple(natural_key)
        load_id = str(uuid.uuid4()) if scope is not None else ""
        template = LoadRequest(
            tenant=scope.tenant if scope else "",
            natural_key=keys,
            load_id=load_id,
            file_id=scope.file_id if scope else "",
            rows=pl.DataFrame(),
        )
        merged: list[_Merged] = []

        def prepare(frame: pl.DataFrame) -> pl.DataFrame:
            selected = select_target_columns(frame, natural_key=keys, columns=columns)
            checked = check_load_request(
                self.name, replace(template, rows=selected), self.columns, RESERVED_COLUMNS
            )
            return csv_ready(checked.frame)

        def begin(cur: Cursor, ready: pl.DataFrame) -> str:
            if scope is None:
                return self._begin_stage(cur, keys, ready)
            plan = plan_load(self.name, replace(template, rows=ready.clear()), self.columns)
            merged.append(_Merged(plan, {"tenant": scope.tenant, "load_id": load_id,
                                         "file_id": scope.file_id}))  # fmt: skip
            return self._begin_merge(cur, plan)

        def upsert_chunk(session: CopySession) -> None:
            self._upsert_chunk(session, merged[0])

        stage = PostgresEarlyStage(
            self.name,
            key=keys[0],
            connect=lambda: psycopg.connect(self._conninfo.get_secret_value()),
            prepare=prepare,
            begin=begin,
            copy_batch_rows=self.copy_batch_rows,
            after_chunk=upsert_chunk if scope is not None else None,
            load_id=load_id or None,
        )
        stage.merged = merged
        return stage

    # -- stage only --------------------------------------------------------------------

    def _begin_stage(self, cur: Cursor, keys: tuple[str, ...], ready: pl.DataFrame) -> str:
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

    # -- upsert as it goes ---------------------------------------------------------------

    def _begin_merge(self, cur: Cursor, plan: SqlPlan) -> str:
        if self._table_oid(cur) is None:
            # Made and committed first: an empty table shows nothing of the file, and
            # holding the creation lock through the stream would stall other files.
            self._ensure_table(cur, plan)
            cur.connection.commit()
        self._set_work_mem(cur)
        # Each chunk's confirmation matches its keys against the whole table:
        # index probes, not a hash of the table per chunk (the temp stage has no
        # statistics, so the planner cannot tell on its own).
        cur.execute("SELECT set_config('enable_hashjoin', 'off', true)")
        cur.execute("SELECT set_config('enable_mergejoin', 'off', true)")
        self._ensure_table(cur, plan)  # its columns, checked in this transaction
        cur.execute(self.sql.create_stage(plan.staged))
        return f"COPY {self.sql.stage} ({idents(plan.staged)}) FROM STDIN (FORMAT csv)"

    def _upsert_chunk(self, session: CopySession, merged: _Merged) -> None:
        """Upsert the chunk, confirm it, empty the stage."""
        plan, params = merged.plan, merged.params
        inserted, updated = self._upsert(session.cur, plan, params)
        merged.inserted += inserted
        merged.updated += updated
        merged.confirmed += session.count(self.sql.count_present(plan.keys), params)
        session.execute(f"TRUNCATE {self.sql.stage}")

    def _undo_dropped(self, session: CopySession, staged: StagedSession, merged: _Merged) -> None:
        """Take back what the upserts did for keys found repeated at the end.

        Rows carrying this load's id were inserted or updated by it: they are deleted,
        and those it updated are put back as they were. What they were is the committed
        state, which any other transaction still sees; nobody can have changed it since,
        as this transaction holds the rows' locks.
        """
        table, key = self.sql.table, quote(merged.plan.keys[0])
        where = f"tenant = %(tenant)s AND {key} = %(key)s"
        deleted, _ = _each_returning(
            session.cur,
            f"DELETE FROM {table} WHERE {where} AND load_id = %(load_id)s RETURNING {key}",
            [{**merged.params, "key": value} for value in staged.dropped_keys],
        )
        restored = 0
        if deleted:
            with psycopg.connect(self._conninfo.get_secret_value(), autocommit=True) as other:
                before, columns = _each_returning(
                    other.cursor(),
                    f"SELECT * FROM {table} WHERE {where}",
                    [{**merged.params, "key": row[0]} for row in deleted],
                )
            if before:
                values = ", ".join(["%s"] * len(columns))
                session.cur.executemany(
                    f"INSERT INTO {table} ({idents(columns)}) VALUES ({values})", before
                )
            restored = len(before)
        merged.updated -= restored
        merged.inserted -= len(deleted) - restored
        merged.confirmed -= staged.dropped_rows

    # -- the load ------------------------------------------------------------------------

    def _finish_early_stage(
        self,
        stage: PostgresEarlyStage,
        staged: StagedSession,
        plan: SqlPlan,
        params: Params,
        load_id: str,
    ) -> LoadResult | None:
        """Finish the load from a stage filled while streaming and commit; None: load anew.

        Any failure falls back to the ordinary load, which is idempotent: even a commit
        whose outcome was lost only makes that load find its rows unchanged.
        """
        phase = Phase("prepare table")
        merged = stage.merged
        session = staged.session
        try:
            if staged.rows - staged.dropped_rows != plan.sent:
                raise TargetError(f"staged {staged.rows} rows, the load has {plan.sent}")
            if merged:
                same = (merged[0].plan.keys, merged[0].plan.data) == (plan.keys, plan.data)
                if not same or plan.snapshot or load_id != stage.load_id:
                    raise TargetError("the load is not the one the stage upserted")
                if staged.dropped_keys:
                    phase.name = "take back repeated keys"
                    self._undo_dropped(session, staged, merged[0])
                counts = (merged[0].inserted, merged[0].updated, merged[0].confirmed)
                done = self._merge_stage(
                    session, phase, plan, params, load_id, keys_checked=True, merged=counts
                )
            else:
                self._ensure_table(session.cur, plan)
                if staged.dropped_keys:
                    phase.name = "drop repeated keys from staging"
                    session.execute(
                        self.sql.delete_staged(plan.keys[0]), {"keys": staged.dropped_keys}
                    )
                done = self._merge_stage(session, phase, plan, params, load_id, keys_checked=True)
            staged.conn.commit()
            staged.conn.close()
            return done
        except (psycopg.Error, TargetError) as exc:
            detail = error_detail(exc) if isinstance(exc, psycopg.Error) else str(exc)
            logger.info(
                "target %s: the stage filled while streaming failed at %s (%s); "
                "falling back to the ordinary load",
                self.name, phase.name, detail,
            )  # fmt: skip
            with contextlib.suppress(psycopg.Error):
                staged.conn.close()
            return None


def _each_returning(
    cur: Cursor, statement: str, params: list[dict[str, object]]
) -> tuple[list[Any], list[str]]:
    """Run `statement` once per parameter set (pipelined); the rows it returned, its columns.

    One key at a time, on purpose: with the key in an array, a table filled in this
    very transaction (no statistics yet) got a plan reading every row of the tenant.
    """
    if not params:
        return [], []
    cur.executemany(statement, params, returning=True)
    columns = [column.name for column in cur.description or ()]
    rows: list[Any] = []
    while True:
        rows.extend(cur.fetchall())
        if not cur.nextset():
            return rows, columns
