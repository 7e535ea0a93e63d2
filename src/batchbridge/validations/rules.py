"""Split a frame into valid and quarantined rows: pandera checks the contract, then named row rules.

Shared by every feed schema, in two steps:

1. The contract: a pandera polars DataFrameSchema (exactly the feed's columns, all
   strings, plus ROW_COLUMN) validates the frame's columns and types. A missing or
   extra column or a wrong type is schema drift: the whole file fails
   (SchemaDriftError naming the column and what broke, never a value).
2. The row rules (`RuleSet`): each is a named polars expression, True where the row
   passes. All of them are evaluated in one lazy plan, one collect per frame: every
   column is trimmed once, the helper columns several rules share (parsed dates and
   times…) are computed once in stages, then every rule reads them. A row failing
   rule R of column C gets the reason 'C:R'; a row collects every reason it earns, in
   the rule set's order.

Pandera's own per-check machinery (a handful of collects per check, failure cases that
quote cell values) is not used for the row rules: it cost more than the rules
themselves. Only check outputs (booleans), column and rule names are ever reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context
from pandera.errors import SchemaError, SchemaErrors

from batchbridge.errors import SchemaDriftError
from batchbridge.validations.base import REASONS_COLUMN, ROW_COLUMN, ValidationResult
from batchbridge.validations.checks import Stages, trim_stage, with_stages

_BAD = "__bad"


@dataclass(frozen=True)
class Rule:
    """A named row rule of one column: `passes` is True where the row passes."""

    column: str
    name: str
    passes: pl.Expr

    @property
    def reason(self) -> str:
        """The reason a failing row gets: 'column:rule'."""
        return f"{self.column}:{self.name}"


@dataclass(frozen=True)
class RuleSet:
    """A feed's row rules and the helper columns they read, evaluated in one plan.

    The plan trims every column of `trim` in place (rules read them as
    `checks.Trimmed`), adds the helper columns of `stages`, then evaluates `rules`.
    """

    trim: tuple[str, ...]
    stages: Stages
    rules: tuple[Rule, ...]

    @classmethod
    def by_column(
        cls,
        rules: Mapping[str, Sequence[tuple[str, pl.Expr]]],
        *,
        trim: Iterable[str],
        stages: Stages,
    ) -> RuleSet:
        """A rule set from {column: [(rule name, passes), …]}, in that order."""
        listed = tuple(
            Rule(column, name, passes)
            for column, column_rules in rules.items()
            for name, passes in column_rules
        )
        return cls(trim=tuple(trim), stages=stages, rules=listed)

    @property
    def reasons(self) -> list[str]:
        """Every reason the rules can give, in listing order."""
        return [rule.reason for rule in self.rules]

    def failures(self, frame: pl.DataFrame) -> pl.DataFrame:
        """One Boolean column per rule (True where the row fails it), and `__bad` (any)."""
        # A null outcome passes, as pandera's checks treat it (ignore_na); rules never
        # give one (see checks).
        names = [f"__rule{i}" for i in range(len(self.rules))]
        failed = [~rule.passes.fill_null(True) for rule in self.rules]
        plan = with_stages(frame.lazy(), [trim_stage(self.trim), *self.stages])
        flags = plan.select(*(flag.alias(name) for flag, name in zip(failed, names, strict=True)))
        bad = pl.any_horizontal(names) if names else pl.repeat(False, pl.len())
        return flags.with_columns(bad.alias(_BAD)).collect()


def contract_schema(name: str, columns: Iterable[str]) -> pa.DataFrameSchema:
    """The pandera contract of a parsed file: exactly `columns` as strings, plus ROW_COLUMN."""
    # nullable: presence is the `required` rule, so a missing value gets a reason.
    fields = {column: pa.Column(pl.String, nullable=True) for column in columns}
    fields[ROW_COLUMN] = pa.Column(pl.UInt32, nullable=False)
    return pa.DataFrameSchema(fields, strict=True, name=name)


def check_contract(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> None:
    """Raise SchemaDriftError when `frame` breaks `schema` (columns, types, row numbers)."""
    errors: list[SchemaError] = []
    # Force the checks on: pandera's depth can come from the environment
    # (PANDERA_VALIDATION_DEPTH / _ENABLED); skipping them would let drift through.
    with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        try:
            schema.validate(frame, lazy=True)
        except SchemaErrors as exc:
            errors = list(exc.schema_errors)
    if errors:
        error = errors[0]
        column = getattr(error.schema, "name", None)
        check = getattr(error.check, "name", None)
        code = getattr(error.reason_code, "name", str(error.reason_code))
        raise SchemaDriftError(
            f"{schema.name} contract broken: column {column!r}, check {check!r}, {code}",
            reason="schema_contract",
        ) from None


def split_by_rules(
    schema: pa.DataFrameSchema, rules: RuleSet, frame: pl.DataFrame
) -> ValidationResult:
    """Check `frame` against the contract `schema`, then split it by `rules`.

    Quarantined rows get REASONS_COLUMN: their 'column:rule' reasons in rule order.
    Both parts keep `frame`'s rows exactly as read (nothing trimmed or filled).
    """
    check_contract(schema, frame)
    try:
        flags = rules.failures(frame)
    except pl.exceptions.PolarsError as exc:
        # A rule that cannot run is a code or contract bug, not bad rows. Polars'
        # messages may quote values: say which kind of error only.
        raise SchemaDriftError(
            f"{schema.name} row rules failed to run ({type(exc).__name__})",
            reason="schema_contract",
        ) from None
    bad = flags.get_column(_BAD)
    if not bad.any():
        empty = frame.clear().with_columns(
            pl.lit(None, dtype=pl.List(pl.String)).alias(REASONS_COLUMN)
        )
        return ValidationResult(valid=frame, quarantined=empty)
    # Build reason lists for the failing rows only: usually a tiny share of the file.
    reasons = flags.filter(bad).select(
        pl.concat_list(
            [
                pl.when(pl.col(f"__rule{i}")).then(pl.lit(rule.reason)).otherwise(None)
                for i, rule in enumerate(rules.rules)
            ]
        )
        .list.drop_nulls()
        .alias(REASONS_COLUMN)
    )
    quarantined = frame.filter(bad).with_columns(reasons.get_column(REASONS_COLUMN))
    return ValidationResult(valid=frame.filter(~bad), quarantined=quarantined)
