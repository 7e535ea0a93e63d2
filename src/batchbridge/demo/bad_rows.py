"""Bad rows the synthetic lab plants on purpose, so quarantine has something to hold."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import polars as pl

BAD_ROW_KINDS: tuple[str, ...] = (
    "bad_npi",
    "bad_dob",
    "invalid_dob",
    "missing_dob",
    "unmapped_code",
    "missing_last_name",
    "bad_sex",
    "bad_mrn",
    "bad_zip",
    "duplicate_id",
    "collected_after_resulted",
    "bad_collected_at",
    "non_numeric_value",
    "missing_unit",
    "bad_status",
)
"""Every kind `generate_lab_rows(bad_rows=…)` can plant; each breaks one rule of the schema."""

# Kinds that only make sense on rows whose test is quantitative.
_QUANTITATIVE_KINDS = frozenset({"non_numeric_value", "missing_unit"})

_UNMAPPED_CODE = "ZZ-NOT-IN-MAP"


def expected_quarantined(bad_rows: Mapping[str, int] | None) -> int:
    """How many rows `generate_lab_rows(bad_rows=…)` makes invalid.

    Each planted row is distinct; a duplicate id quarantines both the copy and the
    row it copies, so 'duplicate_id': k accounts for 2k rows.
    """
    if not bad_rows:
        return 0
    return sum(bad_rows.values()) + bad_rows.get("duplicate_id", 0)


def plant_rows(
    frame: pl.DataFrame,
    seed: int,
    file_date: date,
    bad_rows: dict[str, int],
    canary_names: list[str],
) -> pl.DataFrame:
    """`frame` (valid rows, with `_quantitative`) with the bad rows and canaries planted.

    Every planted row is a distinct row, chosen in a seeded shuffle; canaries go to
    rows no bad kind took (see `generate_lab_rows`).
    """
    n = frame.height
    order = pl.int_range(0, n, eager=True).shuffle(seed=seed)
    quantitative = frame["_quantitative"]
    used = pl.Series([False] * n)

    def take(count: int, *, quantitative_only: bool = False) -> pl.Series:
        nonlocal used
        mask = ~used.gather(order)
        if quantitative_only:
            mask = mask & quantitative.gather(order)
        chosen = order.filter(mask).head(count)
        if chosen.len() < count:
            raise ValueError(f"not enough suitable rows to plant {count} bad rows")
        used = used.scatter(chosen, True)
        return chosen

    columns = {name: frame[name] for name in frame.columns}
    bad_indices: list[pl.Series] = []

    def set_values(column: str, rows: pl.Series, values: pl.Series | str) -> None:
        replacement = values if isinstance(values, pl.Series) else pl.Series([values] * rows.len())
        columns[column] = columns[column].scatter(rows, replacement)

    for kind in sorted(bad_rows):
        count = bad_rows[kind]
        if count <= 0:
            continue
        rows = take(count, quantitative_only=kind in _QUANTITATIVE_KINDS)
        bad_indices.append(rows)
        if kind == "bad_npi":
            npi = columns["ordering_provider_npi"].gather(rows)
            wrong = (npi.str.slice(9, 1).cast(pl.Int64) + 1) % 10
            set_values("ordering_provider_npi", rows, npi.str.slice(0, 9) + wrong.cast(pl.String))
        elif kind == "bad_dob":
            set_values("patient_dob", rows, (file_date + timedelta(days=30)).isoformat())
        elif kind == "invalid_dob":
            set_values("patient_dob", rows, "1980-02-30")
        elif kind == "missing_dob":
            set_values("patient_dob", rows, "")
        elif kind == "unmapped_code":
            set_values("local_test_code", rows, _UNMAPPED_CODE)
        elif kind == "missing_last_name":
            set_values("patient_last_name", rows, "")
        elif kind == "bad_sex":
            set_values("patient_sex", rows, "X")
        elif kind == "bad_mrn":
            set_values("patient_mrn", rows, "ab-12")
        elif kind == "bad_zip":
            set_values("patient_zip", rows, "1234")
        elif kind == "duplicate_id":
            originals = take(count)
            bad_indices.append(originals)
            set_values("record_id", rows, columns["record_id"].gather(originals))
        elif kind == "collected_after_resulted":
            collected = columns["specimen_collected_at"].gather(rows)
            resulted = columns["resulted_at"].gather(rows)
            set_values("specimen_collected_at", rows, resulted)
            set_values("resulted_at", rows, collected)
        elif kind == "bad_collected_at":
            set_values("specimen_collected_at", rows, "2024-13-45T99:00:00")
        elif kind == "non_numeric_value":
            set_values("result_value", rows, "see comment")
        elif kind == "missing_unit":
            set_values("result_unit", rows, "")
        elif kind == "bad_status":
            set_values("result_status", rows, "X")

    bad_pool = pl.concat(bad_indices) if bad_indices else pl.Series([], dtype=pl.Int64)
    for position, canary in enumerate(canary_names):
        valid_pair = take(2)
        set_values("patient_first_name", valid_pair.head(1), canary)
        set_values("patient_last_name", valid_pair.tail(1), canary)
        if bad_pool.len():
            set_values("patient_first_name", bad_pool.slice(position % bad_pool.len(), 1), canary)
    return pl.DataFrame(columns)
