"""Steward CSV export/import: formula-safe cells, owner-only files, errors never quote a cell."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from batchbridge.errors import ImportRejectedError, StewardError

ID_COLUMN = "quarantine_id"
REASONS_COLUMN = "quarantine_reasons"
"""Why each exported row is quarantined ('column:rule; …'): for the reader, ignored on import."""
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet treats a cell starting with one of these as a formula (CSV injection)."""
GUARD = "'"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def safe_names(names: Sequence[str]) -> str:
    """Column names for an error message; text that is not a name is not echoed.

    A header cell or `--set` key may hold a pasted value (patient data): only
    identifier-shaped names are quoted back, the rest are counted.
    """
    shown = [n for n in names if _NAME.match(n)]
    hidden = len(names) - len(shown)
    parts = shown + ([f"{hidden} name(s) that are not column names"] if hidden else [])
    return ", ".join(parts)


def neutralise(value: str | None) -> str:
    """Prefix a formula-like cell with a quote so a spreadsheet shows it as text.

    Values that already start with the quote get one too, so `unneutralise` restores
    every value exactly.
    """
    text = value or ""
    if text.startswith((*FORMULA_STARTS, GUARD)):
        return GUARD + text
    return text


def unneutralise(cell: str) -> str:
    """Undo `neutralise`: drop the guard quote in front of a formula character or a quote."""
    if cell.startswith(GUARD) and cell[1:].startswith((*FORMULA_STARTS, GUARD)):
        return cell[1:]
    return cell


def write_export(
    path: Path,
    columns: Sequence[str],
    rows: Sequence[tuple[int, Mapping[str, str | None]]],
    reasons: Mapping[int, Sequence[str]] | None = None,
) -> int:
    """Write `quarantine_id`, its reasons and the columns to a new file only its owner can read.

    An existing file is never overwritten (nor a symlink followed): plaintext patient
    data must land exactly where the steward asked, and nowhere else.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise StewardError(f"export file {path} exists already; choose a new name") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow([ID_COLUMN, REASONS_COLUMN, *columns])
            for quarantine_id, values in rows:
                why = "; ".join((reasons or {}).get(quarantine_id, ()))
                writer.writerow([quarantine_id, why, *(neutralise(values.get(c)) for c in columns)])
    except BaseException:
        path.unlink(missing_ok=True)  # never leave half a file of patient data behind
        raise
    return len(rows)


@dataclass(frozen=True)
class ImportRow:
    """One data line of an import file: its line, the row id, and the (un-neutralised) cells."""

    line: int
    quarantine_id: int
    values: dict[str, str]


@dataclass(frozen=True)
class ImportFile:
    """A parsed import file: the value columns it carries and its rows."""

    columns: list[str]
    rows: list[ImportRow]


def read_import(path: Path) -> ImportFile:
    """Parse an edited export; structural problems reject the whole file (lines, never cells)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ImportRejectedError(f"import file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ImportRejectedError(f"{path.name}: not UTF-8 (byte offset {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise ImportRejectedError(f"{path.name}: empty file (no header)") from None
    except csv.Error:
        raise ImportRejectedError(f"{path.name}: line 1: malformed CSV header") from None
    if not header or header[0] != ID_COLUMN:
        raise ImportRejectedError(f"{path.name}: the first column must be {ID_COLUMN}")
    # The reasons column is there for the reader: edits to it change nothing.
    kept = [i for i, name in enumerate(header) if i > 0 and name != REASONS_COLUMN]
    columns = [header[i] for i in kept]
    if len(set(header)) != len(header):
        raise ImportRejectedError(f"{path.name}: duplicate column names in the header")
    rows: list[ImportRow] = []
    seen: dict[int, int] = {}
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error:
            raise ImportRejectedError(
                f"{path.name}: line {reader.line_num}: malformed CSV"
            ) from None
        line = reader.line_num
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            raise ImportRejectedError(
                f"{path.name}: line {line}: expected {len(header)} fields, found {len(record)}"
            )
        raw_id = record[0].strip()
        if not raw_id.isdigit():
            raise ImportRejectedError(f"{path.name}: line {line}: {ID_COLUMN} is not a number")
        quarantine_id = int(raw_id)
        if quarantine_id in seen:
            raise ImportRejectedError(
                f"{path.name}: line {line}: {ID_COLUMN} {quarantine_id} repeats line "
                f"{seen[quarantine_id]}"
            )
        seen[quarantine_id] = line
        values = {header[i]: unneutralise(record[i]) for i in kept}
        rows.append(ImportRow(line=line, quarantine_id=quarantine_id, values=values))
    return ImportFile(columns=columns, rows=rows)
