"""The lab_results feed kind: a pandera contract, row rules with per-row reasons, the transform.

Spec: shared/specs/lab_results.md. The contract (exactly these columns, as strings) is
a pandera polars DataFrameSchema. The row rules are reusable expressions from `checks`,
each named after its rule and built per file (the file date, time zone and LOINC
mapping are part of the rules); `rules.split_by_rules` evaluates them all in one lazy
plan and turns failed rules into 'column:rule' reasons without ever reading a cell
value. Values several rules read (the birth date, the number, both date-times) are
parsed once, as helper columns; the transform parses them the same way.

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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import ClassVar

import polars as pl
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.hmac import HMAC

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
from batchbridge.validations.rules import RuleSet, contract_schema, split_by_rules
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

TIMESTAMP_COLUMNS = ("specimen_collected_at", "resulted_at")
# Helper columns (added for the rules and the transform only, never to the rows): each
# value that several rules read is parsed once.
DOB_DATE = "__patient_dob_date"
VALUE_NUMBER = "__result_value_number"


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


def _timestamps(timezone: str) -> dict[str, checks.IsoDateTime]:
    """The date-time columns, each parsed once into helper columns '__<column>_…'."""
    return {
        column: checks.IsoDateTime(checks.Trimmed(column), timezone, f"__{column}_")
        for column in TIMESTAMP_COLUMNS
    }


def _helpers(timezone: str) -> checks.Stages:
    """The helper columns the rules read (the transform parses the same way)."""
    parsed = [
        checks.parse_iso_date(checks.Trimmed("patient_dob")).alias(DOB_DATE),
        checks.parse_numeric(checks.Trimmed("result_value")).alias(VALUE_NUMBER),
    ]
    times = _timestamps(timezone).values()
    return checks.merge_stages([parsed], *(parsed_time.stages for parsed_time in times))


def _rules(ctx: ValidationContext, mapping: _Mapping) -> dict[str, list[tuple[str, pl.Expr]]]:
    """Every rule of the spec, per column, in the order reasons are listed.

    The rules read trimmed columns (`RuleSet` trims them once) and `_helpers`.
    """
    v = {column: checks.Trimmed(column) for column in COLUMNS}
    times = _timestamps(ctx.timezone)
    collected, resulted = times["specimen_collected_at"], times["resulted_at"]
    dob, number = pl.col(DOB_DATE), pl.col(VALUE_NUMBER)
    quantitative = checks.trimmed(v["local_test_code"]).is_in(mapping.quantitative_codes)

    def required(column: str) -> tuple[str, pl.Expr]:
        return ("required", checks.required(v[column]))

    def timestamp_rules(column: str, parsed: checks.IsoDateTime) -> list[tuple[str, pl.Expr]]:
        return [
            required(column),
            ("iso_datetime", parsed.iso_datetime),
            ("local_time_exists", parsed.local_time_exists),
            ("local_time_unambiguous", parsed.local_time_unambiguous),
        ]

    return {
        "record_id": [required("record_id"), ("unique", checks.unique(v["record_id"]))],
        "patient_mrn": [
            required("patient_mrn"),
            ("pattern", checks.matches(v["patient_mrn"], MRN_PATTERN)),
        ],
        "patient_first_name": [required("patient_first_name")],
        "patient_last_name": [required("patient_last_name")],
        "patient_dob": [
            required("patient_dob"),
            ("iso_date", checks.date_format(v["patient_dob"], "YYYY-MM-DD", parsed=dob)),
            ("date_in_range", checks.parsed_date_in_range(dob, EARLIEST_DOB, ctx.file_date)),
        ],
        "patient_sex": [
            required("patient_sex"),
            ("one_of", checks.one_of(v["patient_sex"], SEX_VALUES, case_insensitive=True)),
        ],
        "patient_zip": [
            required("patient_zip"),
            ("pattern", checks.matches(v["patient_zip"], ZIP_PATTERN)),
        ],
        "ordering_provider_npi": [
            required("ordering_provider_npi"),
            ("npi_luhn", checks.npi_luhn(v["ordering_provider_npi"])),
        ],
        "specimen_collected_at": [
            *timestamp_rules("specimen_collected_at", collected),
            ("not_after_resulted_at", checks.instant_not_after(collected.utc, resulted.utc)),
        ],
        "resulted_at": timestamp_rules("resulted_at", resulted),
        "local_test_code": [
            required("local_test_code"),
            ("unmapped_code", checks.one_of(v["local_test_code"], mapping.codes)),
        ],
        "test_name": [required("test_name")],
        "result_value": [
            required("result_value"),
            (
                "numeric_for_quantitative",
                pl.when(quantitative)
                .then(checks.when_present(v["result_value"], number.is_not_null()))
                .otherwise(True),
            ),
        ],
        "result_unit": [
            (
                "required_when_numeric",
                pl.when(number.is_not_null())
                .then(checks.present(v["result_unit"]))
                .otherwise(True),
            )
        ],
        "reference_range": [],
        "abnormal_flag": [("one_of", checks.one_of(v["abnormal_flag"], FLAG_VALUES))],
        "result_status": [
            required("result_status"),
            ("one_of", checks.one_of(v["result_status"], STATUS_VALUES)),
        ],
    }


def _rule_set(ctx: ValidationContext, mapping: _Mapping) -> RuleSet:
    return RuleSet.by_column(_rules(ctx, mapping), trim=COLUMNS, stages=_helpers(ctx.timezone))


CONTRACT = contract_schema("lab_results", COLUMNS)
"""The pandera contract of a parsed lab_results file: its columns as strings + ROW_COLUMN."""


def validate(frame: pl.DataFrame, ctx: ValidationContext) -> ValidationResult:
    """Split a parsed lab_results file into valid rows and quarantined rows with reasons."""
    rules = _rule_set(ctx, _code_mapping(ctx.mappings))
    return split_by_rules(CONTRACT, rules, frame)


def pseudonymize(mrns: pl.Series, *, tenant: str, key: bytes) -> pl.Series:
    """Hex HMAC-SHA256 of f"{tenant}|{mrn.strip()}" under `key`; null stays null.

    Hashes each distinct MRN once (a file repeats patients), then maps back. The keyed
    state after f"{tenant}|" is made once and copied per MRN: cryptography's HMAC
    (OpenSSL) copies at about half the cost of the standard library's hmac.copy(). The
    MRNs go in as UTF-8 bytes and the digests come out hex-encoded by polars.
    """
    if not key:
        raise ConfigError("the pseudonym key is empty")
    trimmed = mrns.cast(pl.String).str.strip_chars()
    distinct = trimmed.drop_nulls().unique(maintain_order=True)
    base = HMAC(key, SHA256())
    base.update(f"{tenant}|".encode())
    digests = []
    for mrn in distinct.cast(pl.Binary).to_list():
        mac = base.copy()
        mac.update(mrn)
        digests.append(mac.finalize())
    hex_digests = pl.Series(digests, dtype=pl.Binary).bin.encode("hex")
    return trimmed.replace_strict(
        distinct, hex_digests, default=None, return_dtype=pl.String
    ).alias("patient_key")


def _blank_to_null(column: str) -> pl.Expr:
    value = pl.col(column)
    return pl.when(value != "").then(value).otherwise(None).alias(column)


def transform(valid: pl.DataFrame, ctx: TransformContext) -> pl.DataFrame:
    """Valid rows -> warehouse shape: record_id + OUTPUT_COLUMNS + ROW_COLUMN.

    Codes and flags are trimmed; empty optional fields become null; times become
    UTC instants; the MRN becomes `patient_key` and is not carried forward.
    Never fails for a row: anything unparseable (impossible after `validate`)
    would come out null.
    """
    mapping = _code_mapping(ctx.mappings)
    patient_key = pseudonymize(valid["patient_mrn"], tenant=ctx.tenant, key=ctx.pseudonym_key)
    times = _timestamps(ctx.timezone)
    stages = checks.merge_stages(*(parsed.stages for parsed in times.values()))
    # Every text column is trimmed once, in place; the rest reads the trimmed values.
    plan = checks.with_stages(
        valid.lazy().drop("patient_mrn").with_columns(patient_key),
        [checks.trim_stage(c for c in COLUMNS if c != "patient_mrn"), *stages],
    )
    code = pl.col("local_test_code")
    value = checks.Trimmed("result_value")
    return plan.select(
        pl.col("record_id"),
        pl.col("patient_key"),
        code.replace_strict(
            mapping.codes, mapping.loinc_codes, default=None, return_dtype=pl.String
        ).alias("loinc_code"),
        code.replace_strict(
            mapping.codes, mapping.loinc_displays, default=None, return_dtype=pl.String
        ).alias("loinc_display"),
        code,
        pl.col("test_name"),
        pl.col("result_value"),
        pl.when(code.is_in(mapping.quantitative_codes))
        .then(checks.parse_numeric(value))
        .otherwise(None)
        .alias("result_value_numeric"),
        _blank_to_null("result_unit"),
        _blank_to_null("reference_range"),
        _blank_to_null("abnormal_flag"),
        pl.col("result_status"),
        *(parsed.utc.alias(column) for column, parsed in times.items()),
        pl.col("patient_sex").str.to_uppercase(),
        pl.col("patient_first_name"),
        pl.col("patient_last_name"),
        checks.parse_iso_date(checks.Trimmed("patient_dob")).alias("patient_dob"),
        pl.col("patient_zip"),
        pl.col("ordering_provider_npi"),
        pl.col(ROW_COLUMN),
    ).collect()


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
    return _rule_set(ctx, _Mapping([], [], [], [])).reasons
