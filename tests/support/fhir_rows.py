"""Transformed lab_results rows and load requests for the FHIR target's integration tests."""

from __future__ import annotations

import secrets
from datetime import date

import polars as pl

from batchbridge.connectors.targets.base import LoadRequest
from batchbridge.demo.lab_data import generate_lab_rows, mapping_frame
from batchbridge.validations.base import (
    ROW_COLUMN,
    FhirIdentity,
    TransformContext,
    ValidationContext,
)
from batchbridge.validations.schemas.lab_results import LAB_RESULTS

FILE_DATE = date(2026, 3, 1)
ZONE = "America/Chicago"
IDENTITY = FhirIdentity("urn:batchbridge:acme_lab:lab_results", "urn:batchbridge:patient-key")


def lab_rows(n: int, *, seed: int = 11, canary_names: list[str] | None = None) -> pl.DataFrame:
    """`n` transformed lab_results rows (generated valid, validated, transformed)."""
    raw = generate_lab_rows(n, seed=seed, file_date=FILE_DATE, canary_names=canary_names)
    raw = raw.with_columns(pl.int_range(1, n + 1, dtype=pl.UInt32).alias(ROW_COLUMN))
    mappings = {"local_test_code": mapping_frame()}
    valid = LAB_RESULTS.validate(raw, ValidationContext("acme_lab", FILE_DATE, ZONE, mappings))
    assert valid.quarantined.height == 0
    return LAB_RESULTS.transform(
        valid.valid, TransformContext("acme_lab", ZONE, mappings, b"p" * 32)
    )


def request(rows: pl.DataFrame, load_id: str | None = None) -> LoadRequest:
    """A load of `rows` for tenant acme_lab, keyed on record_id."""
    return LoadRequest(
        tenant="acme_lab",
        natural_key=("record_id",),
        load_id=load_id or secrets.token_hex(4),
        file_id="F1",
        rows=rows,
    )
