"""Split a frame by a pandera schema's named row rules into valid and quarantined rows.

Shared by every feed schema. Each pandera check is named after its rule, so a failed
check on column C becomes the reason 'C:<rule>' on exactly the rows whose check output
is False; a row collects every reason it earns. Pandera's failure cases and messages
quote cell values, so they are never read, logged or raised: only check outputs
(booleans), column and rule names.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context
from pandera.constants import CHECK_OUTPUT_KEY
from pandera.errors import SchemaError, SchemaErrorReason, SchemaErrors

from batchbridge.errors import SchemaDriftError
from batchbridge.validations.base import REASONS_COLUMN, ValidationResult


def failed_rule_masks(
    schema: pa.DataFrameSchema, frame: pl.DataFrame
) -> list[tuple[str, pl.Series]]:
    """('column:rule', True-where-failed) for every rule some row breaks."""
    errors: list[SchemaError] = []
    # Force data-level checks: pandera's depth can come from the environment
    # (PANDERA_VALIDATION_DEPTH / _ENABLED), and skipping them would pass every row.
    with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        try:
            schema.validate(frame, lazy=True)
        except SchemaErrors as exc:
            errors = list(exc.schema_errors)
    masks: list[tuple[str, pl.Series]] = []
    for error in errors:
        column = getattr(error.schema, "name", None)
        check = error.check
        rule = getattr(check, "name", None)
        if (
            error.reason_code != SchemaErrorReason.DATAFRAME_CHECK
            or error.check_output is None
            or rule is None
        ):
            # Not a row rule: a missing/extra column, a wrong dtype, or a rule that
            # crashed. That is a contract or code bug, not bad rows; say which, only.
            code = getattr(error.reason_code, "name", str(error.reason_code))
            raise SchemaDriftError(
                f"{schema.name} contract broken: column {column!r}, check {rule!r}, {code}",
                reason="schema_contract",
            ) from None
        failed = ~error.check_output.get_column(CHECK_OUTPUT_KEY).fill_null(False)
        masks.append((f"{column}:{rule}", failed))
    return masks


def split_by_rules(
    schema: pa.DataFrameSchema,
    checked: pl.DataFrame,
    frame: pl.DataFrame,
    order: Mapping[str, int],
) -> ValidationResult:
    """Validate `checked` (`frame` plus any derived helper columns) and split `frame`.

    Quarantined rows get REASONS_COLUMN: their 'column:rule' reasons sorted by `order`.
    """
    masks = failed_rule_masks(schema, checked)
    masks.sort(key=lambda item: order.get(item[0], len(order)))
    if not masks:
        empty = frame.clear().with_columns(
            pl.lit(None, dtype=pl.List(pl.String)).alias(REASONS_COLUMN)
        )
        return ValidationResult(valid=frame, quarantined=empty)
    flags = pl.DataFrame([mask.alias(f"__rule{i}") for i, (_, mask) in enumerate(masks)])
    bad = flags.select(pl.any_horizontal(pl.all())).to_series()
    # Build reason lists for the failing rows only: usually a tiny share of the file.
    reasons = (
        flags.filter(bad)
        .select(
            pl.concat_list(
                [
                    pl.when(pl.col(f"__rule{i}"))
                    .then(pl.lit(reason))
                    .otherwise(pl.lit(None, pl.String))
                    for i, (reason, _) in enumerate(masks)
                ]
            )
            .list.drop_nulls()
            .alias(REASONS_COLUMN)
        )
        .to_series()
    )
    quarantined = frame.filter(bad).with_columns(reasons)
    return ValidationResult(valid=frame.filter(~bad), quarantined=quarantined)
