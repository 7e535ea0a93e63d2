"""The patient_roster feed kind: a clinic's full member roster, pipe-delimited.

Spec: shared/specs/patient_roster.md. Everything specific to the roster lives here;
the file layout (pipe, header record with the row count, Latin-1, trimming) is the
feed's `format:` configuration, the "absent members become inactive" rule is the
feed's `full_snapshot: true`, and the plan table is a mapping CSV.

Choices the spec leaves open:
- `gender` and `effective_from` are required (the spec lists them without "optional").
- `birth_date` must not be after the file's date and not before 1900-01-01.
- `phone`: any punctuation or spaces may surround exactly 10 digits; stored as digits.
- `email`: one '@', no spaces, a dot in the domain; stored lower-case.
- `gender` is matched case-insensitively and stored lower-case.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any, ClassVar

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
from batchbridge.validations.rules import RuleSet, contract_schema, split_by_rules
from batchbridge.validations.schemas.lab_results import pseudonymize

COLUMNS: tuple[str, ...] = (
    "member_id",
    "mrn",
    "given",
    "family",
    "birth_date",
    "gender",
    "phone",
    "email",
    "pcp_npi",
    "plan_code",
    "effective_from",
    "effective_to",
)

OUTPUT_COLUMNS: tuple[str, ...] = (
    "patient_key",
    "plan_code",
    "plan_name",
    "effective_from",
    "effective_to",
    "gender",
    "pcp_npi",
    # Identifiable: the roster is the clinic's patient registry, so targets commonly
    # take these; each target still lists the columns it receives.
    "mrn",
    "given",
    "family",
    "birth_date",
    "phone",
    "email",
)

PLAN_MAPPING = "plan_code"
MAPPING_COLUMNS: tuple[str, ...] = ("plan_code", "plan_name")

DATE_LAYOUT = "MM/DD/YYYY"
MRN_PATTERN = r"^[A-Z0-9]{6,12}$"
GENDER_VALUES = ("male", "female", "other", "unknown")
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s.]+$"
PHONE_PUNCTUATION = r"[\s().+\-/]"
EARLIEST_BIRTH_DATE = date(1900, 1, 1)


def _plan_table(mappings: dict[str, pl.DataFrame]) -> pl.DataFrame:
    table = mappings.get(PLAN_MAPPING)
    if table is None:
        raise ConfigError(f"patient_roster needs the mapping table {PLAN_MAPPING!r}")
    missing = [column for column in MAPPING_COLUMNS if column not in table.columns]
    if missing:
        raise ConfigError(f"mapping {PLAN_MAPPING!r} lacks columns: {', '.join(missing)}")
    table = table.select(
        pl.col("plan_code").cast(pl.String).str.strip_chars(),
        pl.col("plan_name").cast(pl.String).str.strip_chars(),
    )
    if table["plan_code"].is_duplicated().any():
        raise ConfigError(f"mapping {PLAN_MAPPING!r} has duplicate codes")
    return table


def phone_digits(column: checks.ColumnLike) -> pl.Expr:
    """The value without punctuation and spaces (null stays null)."""
    return checks.trimmed(column).str.replace_all(PHONE_PUNCTUATION, "")


# Helper columns (for the rules and the transform only, never added to the rows): each
# date is parsed once.
DATE_COLUMNS: tuple[str, ...] = ("birth_date", "effective_from", "effective_to")
PARSED: dict[str, str] = {column: f"__{column}_date" for column in DATE_COLUMNS}


def _parsed_dates() -> list[pl.Expr]:
    """A stage parsing every date column once (read them as pl.col(PARSED[column]))."""
    return [
        checks.parse_date(checks.Trimmed(column), DATE_LAYOUT).alias(PARSED[column])
        for column in DATE_COLUMNS
    ]


def _rules(ctx: ValidationContext, plan_codes: list[str]) -> dict[str, list[tuple[str, pl.Expr]]]:
    """Every rule of the spec, per column, in the order reasons are listed.

    The rules read trimmed columns (`RuleSet` trims them once) and the parsed dates.
    """
    v = {column: checks.Trimmed(column) for column in COLUMNS}
    parsed = {column: pl.col(name) for column, name in PARSED.items()}

    def required(column: str) -> tuple[str, pl.Expr]:
        return ("required", checks.required(v[column]))

    def date_format(column: str) -> tuple[str, pl.Expr]:
        return ("date_format", checks.date_format(v[column], DATE_LAYOUT, parsed=parsed[column]))

    birth_date = parsed["birth_date"]
    return {
        "member_id": [required("member_id"), ("unique", checks.unique(v["member_id"]))],
        "mrn": [required("mrn"), ("pattern", checks.matches(v["mrn"], MRN_PATTERN))],
        "given": [required("given")],
        "family": [required("family")],
        "birth_date": [
            required("birth_date"),
            date_format("birth_date"),
            (
                "not_in_future",
                checks.parsed_date_in_range(birth_date, EARLIEST_BIRTH_DATE, ctx.file_date),
            ),
        ],
        "gender": [
            required("gender"),
            ("one_of", checks.one_of(v["gender"], GENDER_VALUES, case_insensitive=True)),
        ],
        "phone": [
            (
                "ten_digits",
                pl.when(checks.present(v["phone"]))
                .then(phone_digits(v["phone"]).str.contains(r"^[0-9]{10}$"))
                .otherwise(True),
            )
        ],
        "email": [("plausible_email", checks.matches(v["email"], EMAIL_PATTERN))],
        "pcp_npi": [("npi_luhn", checks.npi_luhn(v["pcp_npi"]))],
        "plan_code": [
            required("plan_code"),
            ("unmapped_code", checks.one_of(v["plan_code"], plan_codes)),
        ],
        "effective_from": [required("effective_from"), date_format("effective_from")],
        "effective_to": [
            date_format("effective_to"),
            (
                "not_before_effective_from",
                (parsed["effective_to"] >= parsed["effective_from"]).fill_null(True),
            ),
        ],
    }


CONTRACT = contract_schema("patient_roster", COLUMNS)
"""The pandera contract of a parsed roster: its columns as strings + ROW_COLUMN."""


def validate(frame: pl.DataFrame, ctx: ValidationContext) -> ValidationResult:
    """Split a parsed roster into valid rows and quarantined rows with reasons."""
    rules = _rules(ctx, _plan_table(ctx.mappings)["plan_code"].to_list())
    rule_set = RuleSet.by_column(rules, trim=COLUMNS, stages=[_parsed_dates()])
    return split_by_rules(CONTRACT, rule_set, frame)


def _blank_to_null(expr: pl.Expr, name: str) -> pl.Expr:
    return pl.when(expr != "").then(expr).otherwise(None).alias(name)


def transform(valid: pl.DataFrame, ctx: TransformContext) -> pl.DataFrame:
    """Valid rows -> target shape: member_id + OUTPUT_COLUMNS + ROW_COLUMN."""
    plans = _plan_table(ctx.mappings)
    patient_key = pseudonymize(valid["mrn"], tenant=ctx.tenant, key=ctx.pseudonym_key)
    # Every column is trimmed once, in place; the rest reads the trimmed values.
    plan = checks.with_stages(
        valid.lazy().with_columns(patient_key), [checks.trim_stage(COLUMNS), _parsed_dates()]
    )
    code = pl.col("plan_code")
    return plan.select(
        pl.col("member_id"),
        pl.col("patient_key"),
        code,
        code.replace_strict(
            plans["plan_code"], plans["plan_name"], default=None, return_dtype=pl.String
        ).alias("plan_name"),
        pl.col(PARSED["effective_from"]).alias("effective_from"),
        pl.col(PARSED["effective_to"]).alias("effective_to"),
        pl.col("gender").str.to_lowercase(),
        _blank_to_null(pl.col("pcp_npi"), "pcp_npi"),
        pl.col("mrn"),
        pl.col("given"),
        pl.col("family"),
        pl.col(PARSED["birth_date"]).alias("birth_date"),
        _blank_to_null(phone_digits(checks.Trimmed("phone")), "phone"),
        _blank_to_null(pl.col("email").str.to_lowercase(), "email"),
        pl.col(ROW_COLUMN),
    ).collect()


def fhir_resources(rows: pl.DataFrame, identity: FhirIdentity) -> Iterator[FhirResource]:
    """One FHIR R4 Patient per member, identified by member id and pseudonymous key."""
    for row in rows.iter_rows(named=True):
        identifiers = [{"system": identity.identifier_system, "value": row["member_id"]}]
        if row.get("patient_key"):
            identifiers.append(
                {"system": identity.patient_identifier_system, "value": row["patient_key"]}
            )
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": identifiers,
            "active": True,
        }
        if row.get("family") or row.get("given"):
            name: dict[str, Any] = {}
            if row.get("family"):
                name["family"] = row["family"]
            if row.get("given"):
                name["given"] = [row["given"]]
            patient["name"] = [name]
        if row.get("gender"):
            patient["gender"] = row["gender"]
        if row.get("birth_date") is not None:
            patient["birthDate"] = row["birth_date"].isoformat()
        telecom = [
            {"system": system, "value": row[column]}
            for column, system in (("phone", "phone"), ("email", "email"))
            if row.get(column)
        ]
        if telecom:
            patient["telecom"] = telecom
        yield FhirResource(
            row=int(row[ROW_COLUMN]),
            resource=patient,
            identifier_system=identity.identifier_system,
            identifier=str(row["member_id"]),
        )


class PatientRosterSchema:
    """The patient_roster FeedSchema: see the module docstring and the spec."""

    name: str = "patient_roster"
    columns: tuple[str, ...] = COLUMNS
    natural_key: tuple[str, ...] = ("member_id",)
    output_columns: tuple[str, ...] = OUTPUT_COLUMNS
    required_mappings: tuple[str, ...] = (PLAN_MAPPING,)
    mapping_columns: ClassVar[dict[str, tuple[str, ...]]] = {PLAN_MAPPING: MAPPING_COLUMNS}

    def validate(self, frame: pl.DataFrame, ctx: ValidationContext) -> ValidationResult:
        """Apply every row rule (including the plan lookup); never raises for a bad row."""
        return validate(frame, ctx)

    def transform(self, valid: pl.DataFrame, ctx: TransformContext) -> pl.DataFrame:
        """Map valid rows to the target shape: natural key + output_columns + ROW_COLUMN."""
        return transform(valid, ctx)

    def fhir_resources(self, rows: pl.DataFrame, identity: FhirIdentity) -> Iterator[FhirResource]:
        """Members as FHIR Patients (see `fhir_resources`)."""
        return fhir_resources(rows, identity)

    def __repr__(self) -> str:
        return f"<FeedSchema {self.name}>"


SCHEMA = PatientRosterSchema()
