"""Reconcile: a file is done only when every count balances."""

from __future__ import annotations

from collections.abc import Sequence

from batchbridge.connectors.targets.base import LoadResult
from batchbridge.errors import ReconciliationError
from batchbridge.tasks.guard import stage_task


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


reconcile_file = stage_task("reconcile")(reconcile_counts)
