"""What a feed schema module provides: columns, key, row validation and transform."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol, runtime_checkable

import polars as pl

ROW_COLUMN = "_row"
"""1-based number of the data record in the file (header and trailer not counted)."""

REASONS_COLUMN = "_reasons"
"""List of 'column:rule' strings explaining why a row is quarantined (never values)."""


@dataclass(frozen=True)
class ParsedFile:
    """Every data record of a file as strings, plus the count a trailer/header declared."""

    frame: pl.DataFrame
    declared_count: int | None

    @property
    def rows_read(self) -> int:
        return self.frame.height


@dataclass(frozen=True)
class ValidationContext:
    """Facts row rules need beyond the row itself."""

    tenant: str
    file_date: date
    timezone: str
    mappings: dict[str, pl.DataFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationResult:
    """Split of a parsed file: valid rows, and quarantined rows with their reasons.

    Both keep the file's columns and ROW_COLUMN; `quarantined` adds REASONS_COLUMN.
    valid.height + quarantined.height == rows parsed.
    """

    valid: pl.DataFrame
    quarantined: pl.DataFrame


@dataclass(frozen=True)
class TransformContext:
    """Facts the transform needs: tenant, time zone, mappings and the pseudonym key."""

    tenant: str
    timezone: str
    mappings: dict[str, pl.DataFrame]
    pseudonym_key: bytes

    def __repr__(self) -> str:
        return f"TransformContext(tenant={self.tenant!r}, timezone={self.timezone!r})"


class FeedSchema(Protocol):
    """One feed kind (lab_results, patient_roster…): the only code a new kind needs."""

    name: str
    columns: tuple[str, ...]
    natural_key: tuple[str, ...]
    output_columns: tuple[str, ...]
    required_mappings: tuple[str, ...]

    @property
    def mapping_columns(self) -> dict[str, tuple[str, ...]]:
        """Columns each mapping table must have, by mapping name."""
        ...

    def validate(self, frame: pl.DataFrame, ctx: ValidationContext) -> ValidationResult:
        """Apply every row rule (including mapping lookups); never raises for a bad row."""
        ...

    def transform(self, valid: pl.DataFrame, ctx: TransformContext) -> pl.DataFrame:
        """Map valid rows to the target shape: natural key + output_columns + ROW_COLUMN."""
        ...


@dataclass(frozen=True)
class FhirIdentity:
    """The identifier systems a FHIR target stamps on what it writes."""

    identifier_system: str
    patient_identifier_system: str


@dataclass(frozen=True)
class FhirResource:
    """One FHIR R4 resource made from a row (`row` = ROW_COLUMN), or a supporting one.

    Supporting resources (row None, e.g. a Patient stub that Observations refer to)
    are not rows of the file and are not counted in reconciliation.
    `identifier` is the business identifier value under the target's system: the
    target creates or updates the resource by it, so a rerun never duplicates.
    """

    row: int | None
    resource: dict[str, Any]
    identifier_system: str
    identifier: str


@runtime_checkable
class SupportsFhir(Protocol):
    """A feed schema that can express its transformed rows as FHIR R4 resources."""

    def fhir_resources(self, rows: pl.DataFrame, identity: FhirIdentity) -> Iterator[FhirResource]:
        """Resources for `rows` (transformed, with ROW_COLUMN); supporting ones first."""
        ...
