"""HL7 v2 reader benchmark: one batch file of N OBX rows, bytes -> Polars frame, best of R.

    PYTHONPATH=. .venv/bin/python bench/hl7_parse.py --obx 100000 [--profile]

The file is made in memory the way the tests make theirs (`generate_lab_rows` rendered by
`render_lab_hl7`: FHS/BHS, one ORU^R01 per patient, an ORC/OBR per order, one OBX per
row, BTS/FTS), with a few planted bad rows so escapes and odd values are on the path too.
What is timed is exactly what the pipeline calls for an hl7v2 feed: `read_plaintext`
(the format registry) with the feed's `Hl7v2FormatConfig` and the lab_results columns.
Generating and rendering the file is not timed.

--profile runs one more parse under cProfile and prints the functions taking the most
time (own time and cumulative), so a regression shows where it went.

Exit status: 0 when the best run is within --target seconds and the frame has one row
per OBX, 1 otherwise.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from datetime import date

from tests.support.hl7_data import render_lab_hl7

from batchbridge.config import Hl7v2FormatConfig
from batchbridge.demo.bad_rows import BAD_ROW_KINDS
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.validations.formats import read_plaintext
from batchbridge.validations.schemas.lab_results import COLUMNS

FILE_DATE = date(2026, 11, 20)
SEED = 20261120
# A few of every kind of bad row: odd dates, blank fields, values that need escaping.
BAD_ROWS_PER_KIND = 5


def make_file(obx: int, *, batches: int, segment_end: str) -> bytes:
    """An HL7 v2 batch file with `obx` OBX segments, as the bytes a decrypt step hands over."""
    per_kind = BAD_ROWS_PER_KIND if obx >= 10 * BAD_ROWS_PER_KIND * len(BAD_ROW_KINDS) else 0
    bad_rows = dict.fromkeys(BAD_ROW_KINDS, per_kind) if per_kind else None
    frame = generate_lab_rows(obx, seed=SEED, file_date=FILE_DATE, bad_rows=bad_rows)
    return render_lab_hl7(frame, batches=batches, segment_end=segment_end, file_date=FILE_DATE)


def parse_once(data: bytes, fmt: Hl7v2FormatConfig) -> tuple[float, int]:
    """Seconds for one full parse and the rows it gave."""
    start = time.perf_counter()
    parsed = read_plaintext(data, fmt, COLUMNS)
    return time.perf_counter() - start, parsed.frame.height


def profile(data: bytes, fmt: Hl7v2FormatConfig, top: int) -> str:
    """cProfile of one parse: the `top` functions by own time, then by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    read_plaintext(data, fmt, COLUMNS)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obx", type=int, default=100_000, help="OBX segments (rows) in the file")
    parser.add_argument("--repeat", type=int, default=3, help="parses timed; the best one counts")
    parser.add_argument("--target", type=float, default=3.0, help="seconds the best parse may take")
    parser.add_argument("--batches", type=int, default=1, help="BHS … BTS batches in the file")
    parser.add_argument(
        "--segment-end", choices=["cr", "crlf", "lf"], default="cr", help="segment terminator"
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    parser.add_argument("--top", type=int, default=25, help="functions in the profile summary")
    args = parser.parse_args(argv)

    end = {"cr": "\r", "crlf": "\r\n", "lf": "\n"}[args.segment_end]
    fmt = Hl7v2FormatConfig()
    started = time.perf_counter()
    data = make_file(args.obx, batches=args.batches, segment_end=end)
    print(
        f"file: {args.obx} OBX, {len(data) / 1e6:.1f} MB, {data.count(b'MSH|')} messages, "
        f"{args.batches} batch(es), made in {time.perf_counter() - started:.1f} s"
    )

    timings: list[float] = []
    rows = 0
    for run in range(1, args.repeat + 1):
        seconds, rows = parse_once(data, fmt)
        timings.append(seconds)
        print(f"run {run}: {seconds:.3f} s")
    best = min(timings)
    print(f"best of {args.repeat}: {best:.3f} s, {rows / best:,.0f} rows/s ({rows} rows)")

    if args.profile:
        print(profile(data, fmt, args.top))

    ok = True
    if rows != args.obx:
        print(f"FAIL: {rows} rows for {args.obx} OBX segments")
        ok = False
    if best > args.target:
        print(f"FAIL: {best:.3f} s is over the {args.target:.1f} s target")
        ok = False
    if ok:
        print(f"PASS: within {args.target:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
