"""Load a steward-maintained mapping table (CSV) into an all-string polars frame."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from batchbridge.config import LoadedFeed
from batchbridge.errors import ConfigError
from batchbridge.validations.base import FeedSchema

BOOLEAN_VALUES = {"true": "true", "false": "false"}
"""Accepted spellings of a boolean mapping cell (case-insensitive) and their stored form."""


def load_mapping(
    path: Path,
    required_columns: Sequence[str] = (),
    *,
    key: str | None = None,
    boolean_columns: Sequence[str] = ("quantitative",),
) -> pl.DataFrame:
    """Read a mapping CSV; every cell is a trimmed string.

    `key` (default: the first required column, else the file's first column)
    must be unique and non-blank.
    Every required column must be non-blank on every row. Columns named in
    `boolean_columns` must hold 'true' or 'false' (any case) and are stored
    lower-cased. Extra columns are kept. Errors raise ConfigError naming the
    file and line (and the row's key: codes are not patient data).
    """
    name = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"mapping file {name} does not exist ({path})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 (byte offset {exc.start})") from None

    # newline="" hands csv the raw line ends, so quoted newlines stay inside their field.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ConfigError(f"{name}: empty mapping file (no header)") from None
    except csv.Error:
        raise ConfigError(f"{name}: line 1: malformed CSV header") from None
    header = [column.strip() for column in header]
    key_column = key or (required_columns[0] if required_columns else header[0])
    missing = [column for column in required_columns if column not in header]
    if missing:
        raise ConfigError(f"{name}: missing columns: {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise ConfigError(f"{name}: duplicate column names in the header")
    if key_column not in header:
        raise ConfigError(f"{name}: key column {key_column!r} is not in the header")

    rows: list[list[str]] = []
    seen: dict[str, int] = {}
    booleans = [header.index(column) for column in boolean_columns if column in header]
    required_positions = [header.index(column) for column in required_columns]
    key_position = header.index(key_column)
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error:
            raise ConfigError(f"{name}: line {reader.line_num}: malformed CSV") from None
        line = reader.line_num
        if not record or all(not cell.strip() for cell in record):
            continue  # blank lines are harmless in a hand-edited table
        if len(record) != len(header):
            raise ConfigError(
                f"{name}: line {line}: expected {len(header)} fields, found {len(record)}"
            )
        cells = [cell.strip() for cell in record]
        for position in required_positions:
            if not cells[position]:
                raise ConfigError(f"{name}: line {line}: column {header[position]!r} is blank")
        for position in booleans:
            normalised = BOOLEAN_VALUES.get(cells[position].lower())
            if normalised is None:
                raise ConfigError(
                    f"{name}: line {line}: column {header[position]!r} must be true or false"
                    f" ({key_column} {cells[key_position]!r})"
                )
            cells[position] = normalised
        code = cells[key_position]
        if code in seen:
            raise ConfigError(
                f"{name}: line {line}: duplicate {key_column} {code!r}"
                f" (first defined on line {seen[code]})"
            )
        seen[code] = line
        rows.append(cells)

    return pl.DataFrame(rows, schema={column: pl.String for column in header}, orient="row")


def load_feed_mappings(loaded: LoadedFeed, schema: FeedSchema) -> dict[str, pl.DataFrame]:
    """Every mapping table the schema needs, read from the paths the feed YAML gives."""
    missing = [m for m in schema.required_mappings if m not in loaded.config.mappings]
    if missing:
        raise ConfigError(
            f"feed {loaded.config.feed}: schema {schema.name} needs mappings {', '.join(missing)}"
        )
    return {
        name: load_mapping(loaded.resolve_path(path), schema.mapping_columns.get(name, ()))
        for name, path in loaded.config.mappings.items()
    }
