"""Transform valid rows to the feed's output shape, and each target's columns only."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from batchbridge.errors import ConfigError
from batchbridge.validations.base import ROW_COLUMN, FeedSchema, TransformContext


def transform_valid_rows(
    valid: pl.DataFrame, schema: FeedSchema, ctx: TransformContext
) -> pl.DataFrame:
    """Map valid rows to the feed's output shape (natural key, outputs, row number)."""
    return schema.transform(valid, ctx)


def select_target_columns(
    rows: pl.DataFrame, *, natural_key: Sequence[str], columns: Sequence[str]
) -> pl.DataFrame:
    """Data minimization: only the natural key, the columns a target asks for, the row number."""
    unknown = [c for c in columns if c not in rows.columns]
    if unknown:
        raise ConfigError(
            f"target asks for columns the feed does not produce: {', '.join(unknown)}"
        )
    wanted = [*natural_key, *[c for c in columns if c not in natural_key], ROW_COLUMN]
    return rows.select(wanted)
