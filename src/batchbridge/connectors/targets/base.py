"""The Target protocol: idempotent upserts on a natural key, confirmed per load id."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import polars as pl


class RowChunks(Protocol):
    """A file's rows chunk by chunk, readable again from the start (a retry reads them again)."""

    def frames(self) -> Iterator[pl.DataFrame]:
        """The rows, a chunk at a time."""
        ...

    @property
    def height(self) -> int:
        """How many rows `frames` yields."""
        ...


class StagedRows(Protocol):
    """Rows a target began staging while the file was still read (targets.early_stage)."""

    target: str
    load_id: str | None
    """The load id the staged rows carry already, if they were upserted as they came."""


@dataclass(frozen=True)
class LoadRequest:
    """What to load: the rows for this target plus the lineage every row carries.

    `rows` holds the rows, or, when `chunks` is set (targets with `accepts_chunks`), no
    rows but their columns and types: the rows then come chunk by chunk from `chunks`.
    `full_snapshot`: the rows are every current record of the tenant, so a target that
    keeps state marks the tenant's other records inactive (never deletes them), except
    those whose keys are in `kept_keys` (rows of the file that were quarantined).
    `staged`: the same rows, staged by this target while the file was read; the target
    loads from there if it can, else from `chunks`.
    """

    tenant: str
    natural_key: tuple[str, ...]
    load_id: str
    file_id: str
    rows: pl.DataFrame
    feed: str = ""
    source_name: str = ""
    full_snapshot: bool = False
    kept_keys: pl.DataFrame | None = None
    chunks: RowChunks | None = None
    staged: StagedRows | None = None

    @property
    def rows_sent(self) -> int:
        """Rows in the request, whichever way they come."""
        return self.rows.height if self.chunks is None else self.chunks.height


@dataclass(frozen=True)
class RowRejection:
    """A row the target refused as invalid (a 4xx, not a transient failure).

    `row` is the row's ROW_COLUMN; `reason` a code such as 'http_422:required' built
    from status and issue codes only (target diagnostics may quote values: never kept).
    """

    row: int
    reason: str


@dataclass(frozen=True)
class LoadResult:
    """What the target did and confirms.

    rows_inserted + rows_updated + rows_unchanged + rows_rejected == len(request.rows);
    rows_confirmed is the number of the request's natural keys present in the target
    after commit (must equal the rows sent minus rejected).
    """

    target: str
    load_id: str
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    rows_rejected: int
    rows_confirmed: int
    rows_inactivated: int = 0
    rejections: tuple[RowRejection, ...] = ()


class Target(Protocol):
    """A system rows are loaded into; every load is idempotent on the natural key."""

    name: str

    def load(self, request: LoadRequest) -> LoadResult:
        """Upsert `request.rows` in one transaction; retry only transient errors."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


CANARY_TABLE = "batchbridge_health_canary"
"""Health-check table: one row per tenant (tenant, checked_at), kept as the last check."""


@runtime_checkable
class SupportsHealthCanary(Protocol):
    """A target the health check can prove writable without touching loaded rows."""

    name: str

    def check_writable(self, tenant: str) -> datetime:
        """Upsert `tenant`'s canary row, read it back and commit; return the time written."""
        ...
