"""Micro benchmark: load N synthetic lab rows into a fresh PostgreSQL, then again (idempotent)."""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from tests.support.postgres import start_postgres

from batchbridge.connectors.targets.base import LoadRequest, LoadResult
from batchbridge.connectors.targets.postgres import PostgresTarget
from batchbridge.validations.base import ROW_COLUMN

COLUMNS = [
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
]


def synthetic_rows(n: int) -> pl.DataFrame:
    """Rows shaped like the lab_results warehouse target, built column-wise (fast, no PHI)."""
    i = pl.int_range(0, n, dtype=pl.Int64, eager=True)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pl.DataFrame({"i": i}).select(
        record_id=pl.format("R{}", pl.col("i").cast(pl.String).str.pad_start(10, "0")),
        # 64 hex chars, like an HMAC-SHA256 pseudonym.
        patient_key=pl.col("i").hash(1).cast(pl.String).str.pad_start(64, "a"),
        loinc_code=pl.format("{}-{}", pl.col("i") % 5000 + 1000, pl.col("i") % 10),
        loinc_display=pl.format("Synthetic analyte {} [Mass/volume] in Serum", pl.col("i") % 5000),
        local_test_code=pl.format("T{}", pl.col("i") % 5000),
        test_name=pl.format("Synthetic test {}", pl.col("i") % 5000),
        result_value=((pl.col("i") % 1000) / 10).cast(pl.String),
        result_value_numeric=(pl.col("i") % 1000) / 10,
        result_unit=pl.lit("mg/dL"),
        reference_range=pl.lit("10.0-50.0"),
        abnormal_flag=pl.when(pl.col("i") % 7 == 0).then(pl.lit("H")).otherwise(pl.lit(None)),
        result_status=pl.lit("F"),
        specimen_collected_at=pl.lit(base) + pl.duration(seconds=pl.col("i")),
        resulted_at=pl.lit(base) + pl.duration(seconds=pl.col("i") + 3600),
        patient_sex=pl.lit("F"),
        **{ROW_COLUMN: pl.col("i") + 1},
    )
    return frame


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_load(target: PostgresTarget, request: LoadRequest) -> tuple[LoadResult, float]:
    """Run one load and return its result and wall time in seconds."""
    start = time.perf_counter()
    result = target.load(request)
    return result, time.perf_counter() - start


def report(label: str, result: LoadResult, seconds: float, rows: int) -> None:
    """Print one pass's timing, counts and peak RSS."""
    print(
        f"{label:<22} {seconds:7.2f} s  {rows / seconds:>10,.0f} rows/s  "
        f"ins={result.rows_inserted} upd={result.rows_updated} "
        f"unch={result.rows_unchanged} conf={result.rows_confirmed}  "
        f"peak RSS {peak_rss_mib():,.0f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    """Start PostgreSQL, load the rows twice (plus a 1% correction pass), print figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    rows = synthetic_rows(args.rows)
    print(
        f"{args.rows:,} rows, {rows.estimated_size('mb'):,.0f} MB in polars, "
        f"peak RSS before loading {peak_rss_mib():,.0f} MiB"
    )
    with tempfile.TemporaryDirectory(prefix="bb-bench-") as workdir:
        server = start_postgres(Path(workdir))
        try:
            url = server.create_database("bench")
            with PostgresTarget("bench", url, "lab_result", "public", COLUMNS) as target:
                first = LoadRequest("acme_lab", ("record_id",), "load-1", "file-1", rows)
                report("first load (insert)", *timed_load(target, first), rows=args.rows)
                again = LoadRequest("acme_lab", ("record_id",), "load-2", "file-1", rows)
                report("same rows again", *timed_load(target, again), rows=args.rows)
                corrected = rows.with_columns(
                    result_status=pl.when(pl.col(ROW_COLUMN) % 100 == 0)
                    .then(pl.lit("C"))
                    .otherwise(pl.col("result_status"))
                )
                third = LoadRequest("acme_lab", ("record_id",), "load-3", "file-2", corrected)
                report("1% corrected", *timed_load(target, third), rows=args.rows)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
