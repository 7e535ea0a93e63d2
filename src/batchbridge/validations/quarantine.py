"""Quarantine entries: each invalid row encrypted, its row number and reasons in clear."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import polars as pl

from batchbridge.ledger.crypto import RowCipher, row_associated_data
from batchbridge.ledger.store import QuarantineEntry
from batchbridge.validations.base import REASONS_COLUMN, ROW_COLUMN


def encrypt_quarantined(
    quarantined: pl.DataFrame,
    *,
    columns: Sequence[str],
    cipher: RowCipher,
    file_id: str,
    record_column: str | None = None,
) -> list[QuarantineEntry]:
    """One encrypted entry per quarantined row, bound to its file and row number.

    `record_column` (the schema's record id) also gets a keyed hash, so a steward can
    find the row by that id without anything readable stored in clear.
    """
    entries: list[QuarantineEntry] = []
    for record in quarantined.select([*columns, ROW_COLUMN, REASONS_COLUMN]).iter_rows(named=True):
        row_number = int(record.pop(ROW_COLUMN))
        reasons = [str(reason) for reason in record.pop(REASONS_COLUMN)]
        raw = {key: (None if value is None else str(value)) for key, value in record.items()}
        encrypted = cipher.encrypt(raw, row_associated_data(file_id, row_number))
        record_id = raw.get(record_column) if record_column else None
        record_hash = cipher.lookup_hash(record_id) if record_id and record_id.strip() else None
        entries.append(QuarantineEntry(row_number, reasons, encrypted, record_hash))
    return entries


def count_reasons(quarantined: pl.DataFrame) -> dict[str, int]:
    """How many rows failed each 'column:rule' (a row may count under several)."""
    counter: Counter[str] = Counter()
    for reasons in quarantined.get_column(REASONS_COLUMN).to_list():
        counter.update(str(reason) for reason in reasons)
    return dict(sorted(counter.items()))
