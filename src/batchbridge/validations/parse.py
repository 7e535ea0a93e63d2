"""Parse + validate a file's plaintext: strict header and trailer, every row through its schema."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from batchbridge.config import AnyFormatConfig
from batchbridge.validations.base import FeedSchema, ValidationContext, ValidationResult
from batchbridge.validations.formats import read_plaintext

_FILE_DATE = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)")


def file_date_from_name(name: str, fallback: date) -> date:
    """The first real YYYYMMDD date in a file name (partners date their files), else fallback."""
    for match in _FILE_DATE.finditer(name):
        try:
            return date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            continue
    return fallback


@dataclass(frozen=True)
class ValidatedFile:
    """A file's rows split into valid and quarantined, with the counts to reconcile."""

    rows_read: int
    rows_declared: int | None
    result: ValidationResult


def parse_and_validate(
    data: bytes, fmt: AnyFormatConfig, schema: FeedSchema, ctx: ValidationContext
) -> ValidatedFile:
    """Parse strictly (a broken file fails whole), then split rows by the schema's rules."""
    parsed = read_plaintext(data, fmt, schema.columns)
    result = schema.validate(parsed.frame, ctx)
    return ValidatedFile(
        rows_read=parsed.rows_read, rows_declared=parsed.declared_count, result=result
    )
