"""The lab_results feed kind: pandera row rules with per-row reasons, and the transform.

Spec: shared/specs/lab_results.md. The rules live in a pandera polars
DataFrameSchema built per file (the file date, time zone and LOINC mapping are
part of the rules). Each check is one reusable expression from `checks`, named
after its rule; `rules.split_by_rules` turns failed checks into 'column:rule'
reasons without ever reading a cell value.

Choices the spec leaves open:
- A missing value only fails `required` (format rules skip it), so reasons stay
  one per problem; `abnormal_flag` and `reference_range` may be empty.
- `result_unit:required_when_numeric` applies whenever the value is a plain
  number, whatever the test (the spec's wording), mapped or not.
- A naive time in the DST gap or the repeated fall-back hour of the feed's time
  zone is quarantined (`local_time_exists` / `local_time_unambiguous`) rather
  than given a guessed offset.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import ClassVar

import pandera.polars as pa
import polars as pl

from batchbridge.errors import ConfigError
from batchbridge.validations import checks
from batchbridge.validations.base import (
    ROW_COLUMN,
    FhirIdentity,
    FhirResource,
    TransformContext,
    ValidationContext,
    ValidationResult,
)
from batchbridge.validations.rules import split_by_rules
from batchbridge.validations.schemas.lab_results_fhir import lab_fhir_resources

COLUMNS: tuple[str, ...] = (
    "record_id",
    "patient_mrn",
    "patient_first_name",
    "patient_last_name",
    "patient_dob",
    "patient_sex",
    "patient_zip",
    "ordering_provider_npi",
    "specimen_collected_at",
    "resulted_at",
    "local_test_code",
    "test_name",
    "result_value",
    "result_unit",
    "reference_range",
    "abnormal_flag",
    "result_status",
)

OUTPUT_COLUMNS: tuple[str, ...] = (
    "patient_key",
    "loinc_code",
    "loinc_display",
    "local_test_code",
    "test_name",
    "result_value",
    "result_value_numeric",
    "result_unit",
    "reference_range",
    "abnormal_flag",
    "result_status",
    "specimen_collected_at",
    "resulted_at",
    "patient_sex",
    # Identifiable: present so a target *may* select them; none does by default.
    "patient_first_name",
    "patient_last_name",
    "patient_dob",
    "patient_zip",
    "ordering_provider_npi",
)

IDENTIFIABLE_COLUMNS: tuple[str, ...] = (
    "patient_first_name",
    "patient_last_name",
    "patient_dob",
    "patient_zip",
    "ordering_provider_npi",
)
"""Output columns that identify a person: a target receives them only if its config asks."""

CODE_MAPPING = "local_test_code"
MAPPING_COLUMNS: tuple[str, ...] = (
    "local_test_code",
    "loinc_code",
    "loinc_display",
    "quantitative",
)

MRN_PATTERN = r"^[A-Z0-9]{6,12}$"
ZIP_PATTERN = r"^[0-9]{5}(?:-[0-9]{4})?$"
SEX_VALUES = ("M", "F", "O", "U")
FLAG_VALUES = ("N", "L", "H", "LL", "HH", "A")
STATUS_VALUES = ("F", "C", "P")
EARLIEST_DOB = date(1900, 1, 1)

Rule = tuple[str, Callable[[pl.Expr], pl.Expr]]

TIMESTAMP_COLUMNS = ("specimen_collected_at", "resulted_at")
# Derived columns added for validation only: each date-time is parsed once, and its
# four rules (format, DST gap, DST overlap, ordering) read the parsed struct.
FACTS: dict[str, str] = {column: f"__facts_{column}" for column in TIMESTAMP_COLUMNS}


@dataclass(frozen=True)
class _Mapping:
    codes: list[str]
    loinc_codes: list[str]
    loinc_displays: list[str]
    quantitative_codes: list[str]


def _code_mapping(mappings: dict[str, pl.DataFrame]) -> _Mapping:
    table = mappings.get(CODE_MAPPING)
    if table is None:
        raise ConfigError(f"lab_results needs the mapping table {CODE_MAPPING!r}")
    missing = [column for column in MAPPING_COLUMNS if column not in table.columns]
    if missing:
        raise ConfigError(f"mapping {CODE_MAPPING!r} lacks columns: {', '.join(missing)}")
    table = table.select(
        pl.col("local_test_code").cast(pl.String).str.strip_chars(),
        pl.col("loinc_code").cast(pl.String).str.strip_chars(),
        pl.col("loinc_display").cast(pl.String),
        (pl.col("quantitative").cast(pl.String).str.strip_chars().str.to_lowercase() == "true")
        .fill_null(False)
        .alias("quantitative"),
    )
    if table["local_test_code"].is_duplicated().any():
        raise ConfigError(f"mapping {CODE_MAPPING!r} has duplicate codes")
    return _Mapping(
        codes=table["local_test_code"].to_list(),
        loinc_codes=table["loinc_code"].to_list(),
        loinc_displays=table["loinc_display"].to_list(),
        quantitative_codes=table.filter("quantitative")["local_test_code"].to_list(),
    )


def _rules(ctx: ValidationContext, mapping: _Mapping) -> dict[str, list[Rule]]:
    """Every rule of the spec, per column, in the order reasons are listed."""
    code = pl.col("local_test_code")
    value = pl.col("result_value")
    required: Rule = ("required", checks.required)

    def fact(column: str, name: str) -> pl.Expr:
        return pl.col(FACTS[column]).struct.field(name)

    def timestamp_rules(column: str) -> list[Rule]:
        return [
            required,
            ("iso_datetime", lambda _c: fact(column, "iso_datetime")),
            ("local_time_exists", lambda _c: fact(column, "local_time_exists")),
            ("local_time_unambiguous", lambda _c: fact(column, "local_time_unambiguous")),
        ]

    return {
        "record_id": [required, ("unique", checks.unique)],
        "patient_mrn": [required, ("pattern", lambda c: checks.matches(c, MRN_PATTERN))],
        "patient_first_name": [required],
        "patient_last_name": [required],
        "patient_dob": [
            required,
            ("iso_date", checks.iso_date),
            ("date_in_range", lambda c: checks.date_in_range(c, EARLIEST_DOB, ctx.file_date)),
        ],
        "patient_sex": [
            required,
            ("one_of", lambda c: checks.one_of(c, SEX_VALUES, case_insensitive=True)),
        ],
        "patient_zip": [required, ("pattern", lambda c: checks.matches(c, ZIP_PATTERN))],
        "ordering_provider_npi": [required, ("npi_luhn", checks.npi_luhn)],
        "specimen_collected_at": [
            *timestamp_rules("specimen_collected_at"),
            (
                "not_after_resulted_at",
                lambda _c: checks.instant_not_after(
                    fact("specimen_collected_at", "utc"), fact("resulted_at", "utc")
                ),
            ),
        ],
        "resulted_at": timestamp_rules("resulted_at"),
        "local_test_code": [
            required,
            ("unmapped_code", lambda c: checks.one_of(c, mapping.codes)),
        ],
        "test_name": [required],
        "result_value": [
            required,
            (
                "numeric_for_quantitative",
                lambda c: (
                    pl.when(checks.trimmed(code).is_in(mapping.quantitative_codes))
                    .then(checks.numeric(c))
                    .otherwise(True)
                ),
            ),
        ],
        "result_unit": [
            (
                "required_when_numeric",
                lambda c: pl.when(checks.is_numeric(value)).then(checks.present(c)).otherwise(True),
            )
        ],
        "reference_range": [],
        "abnormal_flag": [("one_of", lambda c: checks.one_of(c, FLAG_VALUES))],
        "result_status": [required, ("one_of", lambda c: checks.one_of(c, STATUS_VALUES))],
    }


def build_schema(ctx: ValidationContext) -> pa.DataFrameSchema:
    """The pandera contract for one lab_results file: string columns + named row rules.

    Validate `with_derived_columns(frame, ctx)`, not the bare frame.
    """
    rules = _rules(ctx, _code_mapping(ctx.mappings))
    columns: dict[str, pa.Column] = {
        name: pa.Column(
            pl.String,
            nullable=True,  # presence is the `required` rule, so it gets a reason
            checks=[checks.column_check(rule, expr) for rule, expr in rules[name]],
        )
        for name in COLUMNS
    }
    columns[ROW_COLUMN] = pa.Column(pl.UInt32, nullable=False)
    for helper in FACTS.values():
        columns[helper] = pa.Column(None, nullable=True)
    return pa.DataFrameSchema(columns, strict=True, name="lab_results")


def with_derived_columns(frame: pl.DataFrame, ctx: ValidationContext) -> pl.DataFrame:
    """The frame plus the derived columns `build_schema`'s rules read (see FACTS)."""
    return frame.with_columns(
        checks.iso_datetime_facts(column, ctx.timezone).alias(helper)
        for column, helper in FACTS.items()
    )


def _reason_order(ctx: ValidationContext) -> dict[str, int]:
    rules = _rules(ctx, _Mapping([], [], [], []))
    names = [f"{column}:{rule}" for column in COLUMNS for rule, _ in rules[column]]
    return {name: position for position, name in enumerate(names)}


def validate(frame: pl.DataFrame, ctx: ValidationContext) -> ValidationResult:
    """Split a parsed lab_results file into valid rows and quarantined rows with reasons."""
    schema = build_schema(ctx)
    return split_by_rules(schema, with_derived_columns(frame, ctx), frame, _reason_order(ctx))


def pseudonymize(mrns: pl.Series, *, tenant: str, key: bytes) -> pl.Series:
    """Hex HMAC-SHA256 of f"{tenant}|{mrn.strip()}" under `key`; null stays null.

    Hashes each distinct MRN once (a file repeats patients), then maps back.
    """
    if not key:
        raise ConfigError("the pseudonym key is empty")
    trimmed = mrns.cast(pl.String).str.strip_chars()
    distinct = trimmed.drop_nulls().unique()
    base = hmac.new(key, digestmod="sha256")
    digests = []
    for mrn in distinct.to_list():
        mac = base.copy()  # reuse the keyed inner/outer state: ~3x faster than hmac.new
        mac.update(f"{tenant}|{mrn}".encode())
        digests.append(mac.hexdigest())
    return trimmed.replace_strict(
        distinct, pl.Series(digests, dtype=pl.String), default=None, return_dtype=pl.String
    ).alias("patient_key")


def _blank_to_null(column: str) -> pl.Expr:
    value = checks.trimmed(column)
    return pl.when(value != "").then(value).otherwise(None).alias(column)


def transform(valid: pl.DataFrame, ctx: TransformContext) -> pl.DataFrame:
    """Valid rows -> warehouse shape: record_id + OUTPUT_COLUMNS + ROW_COLUMN.

    Codes and flags are trimmed; empty optional fields become null; times become
    UTC instants; the MRN becomes `patient_key` and is not carried forward.
    Never fails for a row: anything unparseable (impossible after `validate`)
    would come out null.
    """
    mapping = _code_mapping(ctx.mappings)
    code = checks.trimmed("local_test_code")
    quantitative = code.is_in(mapping.quantitative_codes)
    patient_key = pseudonymize(valid["patient_mrn"], tenant=ctx.tenant, key=ctx.pseudonym_key)
    return valid.with_columns(patient_key).select(
        checks.trimmed("record_id").alias("record_id"),
        pl.col("patient_key"),
        code.replace_strict(
            mapping.codes, mapping.loinc_codes, default=None, return_dtype=pl.String
        ).alias("loinc_code"),
        code.replace_strict(
            mapping.codes, mapping.loinc_displays, default=None, return_dtype=pl.String
        ).alias("loinc_display"),
        code.alias("local_test_code"),
        checks.trimmed("test_name").alias("test_name"),
        checks.trimmed("result_value").alias("result_value"),
        pl.when(quantitative)
        .then(checks.parse_numeric("result_value"))
        .otherwise(None)
        .alias("result_value_numeric"),
        _blank_to_null("result_unit"),
        _blank_to_null("reference_range"),
        _blank_to_null("abnormal_flag"),
        checks.trimmed("result_status").alias("result_status"),
        checks.parse_iso_datetime("specimen_collected_at", ctx.timezone).alias(
            "specimen_collected_at"
        ),
        checks.parse_iso_datetime("resulted_at", ctx.timezone).alias("resulted_at"),
        checks.trimmed("patient_sex").str.to_uppercase().alias("patient_sex"),
        checks.trimmed("patient_first_name").alias("patient_first_name"),
        checks.trimmed("patient_last_name").alias("patient_last_name"),
        checks.parse_iso_date("patient_dob").alias("patient_dob"),
        checks.trimmed("patient_zip").alias("patient_zip"),
        checks.trimmed("ordering_provider_npi").alias("ordering_provider_npi"),
        pl.col(ROW_COLUMN),
    )


class LabResultsSchema:
    """The lab_results FeedSchema: see the module docstring and the spec."""

    name: str = "lab_results"
    columns: tuple[str, ...] = COLUMNS
    natural_key: tuple[str, ...] = ("record_id",)
    output_columns: tuple[str, ...] = OUTPUT_COLUMNS
    required_mappings: tuple[str, ...] = (CODE_MAPPING,)
    # Beyond the FeedSchema protocol: the columns each mapping table must have.
    mapping_columns: ClassVar[dict[str, tuple[str, ...]]] = {CODE_MAPPING: MAPPING_COLUMNS}

    def validate(self, frame: pl.DataFrame, ctx: ValidationContext) -> ValidationResult:
        """Apply every row rule (including mapping lookups); never raises for a bad row."""
        return validate(frame, ctx)

    def transform(self, valid: pl.DataFrame, ctx: TransformContext) -> pl.DataFrame:
        """Map valid rows to the target shape: natural key + output_columns + ROW_COLUMN."""
        return transform(valid, ctx)

    def fhir_resources(self, rows: pl.DataFrame, identity: FhirIdentity) -> Iterator[FhirResource]:
        """Transformed rows as FHIR R4: Patient stubs, then one Observation a row."""
        return lab_fhir_resources(rows, identity)

    def __repr__(self) -> str:
        return f"<FeedSchema {self.name}>"


LAB_RESULTS = LabResultsSchema()
SCHEMA = LAB_RESULTS


def reason_names(ctx: ValidationContext) -> Sequence[str]:
    """Every 'column:rule' reason this schema can give, in listing order."""
    return list(_reason_order(ctx))
