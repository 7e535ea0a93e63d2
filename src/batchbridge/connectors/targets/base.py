"""The Target protocol: idempotent upserts on a natural key, confirmed per load id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import polars as pl


@dataclass(frozen=True)
class LoadRequest:
    """What to load: the rows for this target plus the lineage every row carries."""

    tenant: str
    natural_key: tuple[str, ...]
    load_id: str
    file_id: str
    rows: pl.DataFrame


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


class Target(Protocol):
    """A system rows are loaded into; every load is idempotent on the natural key."""

    name: str

    def load(self, request: LoadRequest) -> LoadResult:
        """Upsert `request.rows` in one transaction; retry only transient errors."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
