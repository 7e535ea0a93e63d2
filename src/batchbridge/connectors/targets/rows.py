"""Checks every target makes on a load request before touching its database."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import polars as pl

from batchbridge.connectors.targets.base import LoadRequest
from batchbridge.errors import TargetError
from batchbridge.validations.base import ROW_COLUMN

SNAPSHOT_COLUMNS = ("active", "inactivated_by_load", "inactivated_at")
"""Kept by tables of full-snapshot feeds: a record missing from a later full file is
marked inactive by the load that noticed (never deleted), and active again if it returns."""


@dataclass(frozen=True)
class CheckedRows:
    """The natural key, the data columns, and the frame holding exactly those plus the row."""

    keys: tuple[str, ...]
    data: tuple[str, ...]
    frame: pl.DataFrame


def check_load_request(
    target: str, request: LoadRequest, columns: Sequence[str], reserved: Iterable[str]
) -> CheckedRows:
    """Select only configured columns (data minimization) and refuse empty or repeated keys.

    Validation quarantines every row of a duplicated id, so a repeated key here is a bug
    upstream: refuse rather than let one copy silently win.
    """
    keys = tuple(request.natural_key)
    if not keys:
        raise TargetError(f"target {target}: the request has no natural key")
    clash = sorted(set(reserved).intersection(keys))
    if clash:
        raise TargetError(f"target {target}: natural key columns {clash} are reserved")
    data = tuple(c for c in columns if c not in keys)
    wanted = (*keys, *data, ROW_COLUMN)
    missing = [c for c in wanted if c not in request.rows.columns]
    if missing:
        raise TargetError(f"target {target}: rows lack configured columns {missing}")
    frame = request.rows.select(wanted)
    null_keys = frame.select(pl.any_horizontal(pl.col(keys).is_null()).sum()).item()
    if null_keys:
        raise TargetError(f"target {target}: {null_keys} rows have an empty natural key")
    if frame.n_unique(subset=list(keys)) != frame.height:
        duplicated = int(frame.select(keys).is_duplicated().sum())
        raise TargetError(
            f"target {target}: {duplicated} rows share a natural key "
            f"({', '.join(keys)}) with another row of the same load; "
            "the validation stage guarantees unique keys, so the load is refused"
        )
    return CheckedRows(keys=keys, data=data, frame=frame)
