"""Loading a file's rows into every target (one transaction each, a load id each), and
checking that the counts balance afterwards."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from batchbridge.connectors.targets.base import (
    LoadRequest,
    LoadResult,
    RowChunks,
    StagedRows,
    Target,
)
from batchbridge.connectors.targets.early_stage import EarlyStage
from batchbridge.connectors.targets.postgres_early import EarlyStaging, MergeScope
from batchbridge.crashpoints import crash_point
from batchbridge.errors import ReconciliationError, withhold_unexpected_errors
from batchbridge.ledger.run_report import TargetCounts
from batchbridge.ledger.store import LoadRecord
from batchbridge.validations.transform import select_target_columns
from batchbridge.validations.transformed_rows import TransformedRows

LoadFn = Callable[[Target, LoadRequest], LoadResult]


def load_rows(target: Target, request: LoadRequest) -> LoadResult:
    """Idempotent upsert; transient errors are retried inside the target connector."""
    return target.load(request)


load_rows_scrubbed: LoadFn = withhold_unexpected_errors("load")(load_rows)
"""load_rows outside a Prefect flow (steward release), with the same PHI-safe errors."""


@dataclass(frozen=True)
class TargetLoad:
    """One target's load of one file's rows: rows sent, what the target confirmed, time taken."""

    result: LoadResult
    rows_sent: int
    seconds: float

    def record(self) -> LoadRecord:
        """The ledger's record of this load."""
        r = self.result
        return LoadRecord(
            target=r.target,
            load_id=r.load_id,
            rows_sent=self.rows_sent,
            rows_inserted=r.rows_inserted,
            rows_updated=r.rows_updated,
            rows_unchanged=r.rows_unchanged,
            rows_rejected=r.rows_rejected,
            rows_confirmed=r.rows_confirmed,
            seconds=self.seconds,
            rows_inactivated=r.rows_inactivated,
            rejections=tuple((x.row, x.reason) for x in r.rejections),
        )

    def counts(self) -> TargetCounts:
        """The report's view of this load."""
        r = self.result
        return TargetCounts(
            sent=self.rows_sent,
            inserted=r.rows_inserted,
            updated=r.rows_updated,
            unchanged=r.rows_unchanged,
            rejected=r.rows_rejected,
            confirmed=r.rows_confirmed,
            inactivated=r.rows_inactivated,
            rejection_reasons=dict(Counter(x.reason for x in r.rejections).most_common()),
        )


def load_into_targets(
    targets: Sequence[tuple[Target, Sequence[str]]],
    *,
    tenant: str,
    natural_key: tuple[str, ...],
    file_id: str,
    rows: pl.DataFrame | TransformedRows,
    on_loaded: Callable[[TargetLoad], None],
    load: LoadFn = load_rows_scrubbed,
    feed: str = "",
    source_name: str = "",
    full_snapshot: bool = False,
    kept_keys: pl.DataFrame | None = None,
    staged: Mapping[str, StagedRows] | None = None,
) -> list[TargetLoad]:
    """Load one file's transformed rows into every target (each with its columns only).

    Each target gets a new load id; `file_id` and the rows' ROW_COLUMN are the lineage.
    A streamed file's rows (`TransformedRows`) go chunk by chunk to the targets that
    accept chunks (`accepts_chunks`: the SQL targets) and whole to the others.
    `on_loaded` runs right after each target commits, so a failure in a later target
    leaves the earlier loads recorded. With `full_snapshot`, targets mark the tenant's
    records missing from `rows` inactive, except `kept_keys` (the file's quarantined rows).
    `staged`: the early stages (`open_early_stages`) that took the streamed rows, by target.
    """
    done: list[TargetLoad] = []
    for target, columns in targets:

        def selected(frame: pl.DataFrame, columns: Sequence[str] = columns) -> pl.DataFrame:
            return select_target_columns(frame, natural_key=natural_key, columns=columns)

        chunks: RowChunks | None = None
        if isinstance(rows, pl.DataFrame):
            whole = selected(rows)
        elif getattr(target, "accepts_chunks", False):
            whole, chunks = selected(rows.shape), _Selected(rows, selected)
        else:
            whole = selected(rows.collect())  # a target that needs every row at once
        stage = (staged or {}).get(target.name) if chunks is not None else None
        request = LoadRequest(
            tenant=tenant,
            natural_key=natural_key,
            # A stage that upserted as the rows came wrote its load id into them already.
            load_id=(stage.load_id if stage is not None else None) or str(uuid.uuid4()),
            file_id=file_id,
            rows=whole,
            feed=feed,
            source_name=source_name,
            full_snapshot=full_snapshot,
            kept_keys=kept_keys,
            chunks=chunks,
            staged=stage,
        )
        started = time.perf_counter()
        result = load(target, request)
        crash_point("after_target_commit_before_ledger")
        loaded = TargetLoad(
            result=result,
            rows_sent=request.rows_sent,
            seconds=round(time.perf_counter() - started, 3),
        )
        on_loaded(loaded)
        done.append(loaded)
    return done


def open_early_stages(
    targets: Sequence[tuple[Target, Sequence[str]]],
    *,
    natural_key: tuple[str, ...],
    scope: MergeScope | None = None,
) -> dict[str, EarlyStage]:
    """An early stage (targets.postgres_early) for each target that can stage while streaming.

    With `scope` (not for full-snapshot feeds) the stages upsert as the chunks come.
    """
    return {
        target.name: target.open_early_stage(natural_key, columns, scope)
        for target, columns in targets
        if isinstance(target, EarlyStaging)
    }


class _Selected:
    """A streamed file's rows with one target's columns only, chunk by chunk."""

    def __init__(
        self, rows: TransformedRows, select: Callable[[pl.DataFrame], pl.DataFrame]
    ) -> None:
        self._rows, self._select = rows, select

    def frames(self) -> Iterator[pl.DataFrame]:
        for frame in self._rows.frames():
            yield self._select(frame)

    @property
    def height(self) -> int:
        return self._rows.height


def reconcile_counts(
    *,
    rows_read: int,
    rows_declared: int | None,
    rows_valid: int,
    rows_quarantined: int,
    loads: Sequence[LoadResult],
) -> None:
    """Raise ReconciliationError listing every imbalance; return quietly when all hold."""
    problems: list[str] = []
    if rows_declared is not None and rows_declared != rows_read:
        problems.append(f"declared {rows_declared} rows, read {rows_read}")
    if rows_valid + rows_quarantined != rows_read:
        problems.append(f"read {rows_read} != valid {rows_valid} + quarantined {rows_quarantined}")
    for load in loads:
        accounted = (
            load.rows_inserted + load.rows_updated + load.rows_unchanged + load.rows_rejected
        )
        if accounted != rows_valid:
            problems.append(
                f"target {load.target}: inserted+updated+unchanged+rejected {accounted} "
                f"!= valid {rows_valid}"
            )
        if load.rows_confirmed != rows_valid - load.rows_rejected:
            problems.append(
                f"target {load.target}: confirmed {load.rows_confirmed} "
                f"!= valid {rows_valid} - rejected {load.rows_rejected}"
            )
    if problems:
        raise ReconciliationError("counts do not balance: " + "; ".join(problems))
