"""Splitting by row rules: the pandera contract first, then every rule in one plan."""

from __future__ import annotations

import polars as pl
import pytest

from batchbridge.errors import SchemaDriftError
from batchbridge.validations import checks
from batchbridge.validations.base import REASONS_COLUMN, ROW_COLUMN
from batchbridge.validations.rules import RuleSet, contract_schema, split_by_rules

COLUMNS = ("a", "b")
CONTRACT = contract_schema("demo", COLUMNS)


def frame_of(a: list[str | None], b: list[str | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {"a": a, "b": b, ROW_COLUMN: list(range(1, len(a) + 1))},
        schema={"a": pl.String, "b": pl.String, ROW_COLUMN: pl.UInt32},
    )


def rule_set(**rules: list[tuple[str, pl.Expr]]) -> RuleSet:
    return RuleSet.by_column(rules, trim=COLUMNS, stages=[])


def test_reasons_follow_the_rule_order_and_rows_stay_as_read() -> None:
    a, b = checks.Trimmed("a"), checks.Trimmed("b")
    rules = rule_set(
        b=[("required", checks.required(b))],
        a=[("required", checks.required(a)), ("one_of", checks.one_of(a, ["x"]))],
    )
    frame = frame_of([" x ", "y", "", "x"], ["1", "", "", " 2 "])
    result = split_by_rules(CONTRACT, rules, frame)
    assert result.valid.equals(frame.filter(pl.col(ROW_COLUMN).is_in([1, 4])))
    quarantined = frame.filter(pl.col(ROW_COLUMN).is_in([2, 3]))
    assert result.quarantined.drop(REASONS_COLUMN).equals(quarantined)
    assert result.quarantined[REASONS_COLUMN].to_list() == [
        ["b:required", "a:one_of"],
        ["b:required", "a:required"],
    ]
    assert rules.reasons == ["b:required", "a:required", "a:one_of"]


def test_helper_stages_are_computed_before_the_rules() -> None:
    number = checks.parse_numeric(checks.Trimmed("a")).alias("__a_number")
    rules = RuleSet.by_column(
        {"a": [("small", (pl.col("__a_number") < 10).fill_null(True))]},
        trim=COLUMNS,
        stages=[[number]],
    )
    result = split_by_rules(CONTRACT, rules, frame_of([" 5 ", "50", "n/a"], ["", "", ""]))
    assert result.quarantined[ROW_COLUMN].to_list() == [2]
    assert result.valid.columns == ["a", "b", ROW_COLUMN]


def test_no_failures_gives_an_empty_quarantine_with_reasons_typed() -> None:
    result = split_by_rules(CONTRACT, rule_set(a=[]), frame_of(["x"], ["y"]))
    assert result.valid.height == 1
    assert result.quarantined.height == 0
    assert result.quarantined.schema[REASONS_COLUMN] == pl.List(pl.String)


@pytest.mark.parametrize(
    ("frame", "what"),
    [
        (frame_of(["x"], ["y"]).drop("b"), "COLUMN_NOT_IN_DATAFRAME"),
        (frame_of(["x"], ["y"]).with_columns(c=pl.lit("z")), "COLUMN_NOT_IN_SCHEMA"),
        (frame_of(["x"], ["y"]).with_columns(pl.col("a").cast(pl.Categorical)), "WRONG_DATATYPE"),
    ],
)
def test_contract_drift_fails_the_whole_file(frame: pl.DataFrame, what: str) -> None:
    with pytest.raises(SchemaDriftError, match=f"demo contract broken: .*{what}") as caught:
        split_by_rules(CONTRACT, rule_set(a=[]), frame)
    assert caught.value.reason == "schema_contract"


def test_a_rule_that_cannot_run_fails_whole_without_values() -> None:
    crashing = pl.col("a").cast(pl.Int64, strict=True) > 0  # 'Zebulon' is no number
    with pytest.raises(SchemaDriftError) as caught:
        split_by_rules(CONTRACT, rule_set(a=[("crash", crashing)]), frame_of(["Zebulon"], [""]))
    assert "Zebulon" not in str(caught.value)
    assert caught.value.reason == "schema_contract"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
