"""lab_results validate and transform against their floors, whole file and per streamed chunk.

    PYTHONPATH=. .venv/bin/python bench/stage_floors.py --rows 1000000 [--chunk 100000]
        [--repeat 3] [--profile]

The rows are made the way the other benches make theirs: `generate_lab_rows` with about
0.5% planted bad rows of every kind, rendered by `render_lab_csv` and parsed by the
pipeline's delimited reader (`read_delimited`, default `FormatConfig`), so every field
is a string as the schema receives it. Generating and parsing are not timed.

Timed, best of `--repeat`, in one process:

- validate: `LAB_RESULTS.validate(frame, ctx)` (contract, every row rule, reasons);
- transform: `LAB_RESULTS.transform(valid, ctx)` of the valid rows;
- the validate floor (`validate_floor_seconds`): a plain pandera-polars
  `DataFrameSchema` with equivalent column checks on the same columns (string dtypes,
  regex / isin / length / range checks, a unique id), validated once over the frame
  (`lazy=True`, data checks forced on). It checks less than the feed's rules do (no
  Luhn, no DST, no real-time check, no reasons), so a ratio near 1 is the goal;
- the transform floor (`transform_floor_seconds`): one plain polars `select` computing
  the same output columns, with the same HMAC-SHA256 per distinct MRN in a Python
  loop (stdlib hmac). Its output is compared with the transform's (values and dtypes):
  the floor does the same work on this data, not less.

Then the same over `--chunk`-row slices (the streaming size: stream.py validates and
transforms each chunk on its own), summed over the slices and shown per chunk, since
per-call overhead is paid once per chunk.

`validate_floor_seconds(frame)` and `transform_floor_seconds(frame)` are importable by
other benches; `measure_stage_floors` is bench.run_bench's entry (see bench.children).
`--profile` prints a cProfile of one validate and one transform.
"""

from __future__ import annotations

import argparse
import cProfile
import hmac
import io
import pstats
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import date
from pathlib import Path
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context
from pandera.errors import SchemaErrors

from batchbridge.config import FormatConfig
from batchbridge.demo.bad_rows import BAD_ROW_KINDS, expected_quarantined
from batchbridge.demo.lab_data import generate_lab_rows, mapping_frame, render_lab_csv
from batchbridge.validations.base import ROW_COLUMN, TransformContext, ValidationContext
from batchbridge.validations.readers.delimited import read_delimited
from batchbridge.validations.schemas.lab_results import COLUMNS, LAB_RESULTS, pseudonymize

FILE_DATE = date(2026, 11, 20)
SEED = 20261120
TENANT = "bench_lab"
TIMEZONE = "America/Chicago"
PSEUDONYM_KEY = b"stage-floors-bench-key-32-bytes!"
BAD_ROW_SHARE = 0.005
CHUNK_ROWS = 100_000

ISO_DATE = r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}\s*$"
ISO_DATETIME = (
    r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"
    r"(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?\s*$"
)


def validation_context(mappings: dict[str, pl.DataFrame] | None = None) -> ValidationContext:
    """The context the bench validates with (its file date, Chicago, the demo mapping)."""
    return ValidationContext(
        tenant=TENANT,
        file_date=FILE_DATE,
        timezone=TIMEZONE,
        mappings=mappings or {"local_test_code": mapping_frame()},
    )


def transform_context(mappings: dict[str, pl.DataFrame] | None = None) -> TransformContext:
    """The context the bench transforms with (same tenant, zone and mapping, a fixed key)."""
    return TransformContext(
        tenant=TENANT,
        timezone=TIMEZONE,
        mappings=mappings or {"local_test_code": mapping_frame()},
        pseudonym_key=PSEUDONYM_KEY,
    )


def make_frame(rows: int) -> pl.DataFrame:
    """`rows` generated lab rows (~0.5% bad), rendered as CSV and parsed by the reader."""
    units = len(BAD_ROW_KINDS) + 1  # a duplicate id quarantines the original as well
    per_kind = max(1, round(rows * BAD_ROW_SHARE / units)) if rows >= 10 * units else 0
    bad_rows = dict.fromkeys(BAD_ROW_KINDS, per_kind) if per_kind else None
    frame = generate_lab_rows(rows, seed=SEED, file_date=FILE_DATE, bad_rows=bad_rows)
    data = render_lab_csv(frame)
    del frame
    parsed = read_delimited(data, FormatConfig(), COLUMNS).frame
    assert expected_quarantined(bad_rows) <= parsed.height
    return parsed


def timed(runs: int, work: Callable[[], object]) -> tuple[float, float]:
    """The fastest of `runs` calls of `work`: wall seconds, and CPU seconds (all threads).

    On a shared machine the CPU time is the steadier figure: wall time also counts
    the time other processes held the cores.
    """
    wall = cpu = float("inf")
    for _ in range(max(1, runs)):
        started, cpu_started = time.perf_counter(), time.process_time()
        work()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - cpu_started)
    return wall, cpu


def best_of(runs: int, work: Callable[[], object]) -> float:
    """The fastest of `runs` timed calls of `work`, in wall seconds."""
    return timed(runs, work)[0]


# -- floors -------------------------------------------------------------------------------


def floor_schema(ctx: ValidationContext) -> pa.DataFrameSchema:
    """Plain pandera: the same columns, string dtypes, one built-in-style check per rule."""
    codes = ctx.mappings["local_test_code"]["local_test_code"].to_list()

    def present() -> pa.Check:
        return pa.Check.str_length(min_value=1)

    def pattern(regex: str) -> pa.Check:
        return pa.Check.str_matches(regex)

    def dob_in_range(data: pa.PolarsData) -> pl.LazyFrame:
        parsed = pl.col(data.key).str.strip_chars().str.to_date("%Y-%m-%d", strict=False)
        ok = parsed.is_between(date(1900, 1, 1), ctx.file_date).fill_null(True)
        return data.lazyframe.select(ok)

    def text(*checks: pa.Check, unique: bool = False) -> pa.Column:
        return pa.Column(pl.String, nullable=True, checks=list(checks), unique=unique)

    flags = ["", "N", "L", "H", "LL", "HH", "A"]
    columns = {
        "record_id": text(present(), unique=True),
        "patient_mrn": text(present(), pattern(r"^\s*[A-Z0-9]{6,12}\s*$")),
        "patient_first_name": text(present()),
        "patient_last_name": text(present()),
        "patient_dob": text(present(), pattern(ISO_DATE), pa.Check(dob_in_range)),
        "patient_sex": text(pa.Check.isin([*"MFOU", *"mfou"])),
        "patient_zip": text(pattern(r"^\s*[0-9]{5}(?:-[0-9]{4})?\s*$")),
        "ordering_provider_npi": text(pattern(r"^\s*[0-9]{10}\s*$")),
        "specimen_collected_at": text(present(), pattern(ISO_DATETIME)),
        "resulted_at": text(present(), pattern(ISO_DATETIME)),
        "local_test_code": text(pa.Check.isin(codes)),
        "test_name": text(present()),
        "result_value": text(present()),
        "result_unit": text(),
        "reference_range": text(),
        "abnormal_flag": text(pa.Check.isin(flags)),
        "result_status": text(pa.Check.isin(["F", "C", "P"])),
        ROW_COLUMN: pa.Column(pl.UInt32, nullable=False),
    }
    return pa.DataFrameSchema(columns, strict=True, name="lab_results_floor")


def validate_floor(frame: pl.DataFrame, schema: pa.DataFrameSchema) -> None:
    """One plain pandera validation of `frame`: every check over the frame, errors collected."""
    depth = ValidationDepth.SCHEMA_AND_DATA
    # The planted bad rows fail some checks, as they should.
    with config_context(validation_enabled=True, validation_depth=depth), suppress(SchemaErrors):
        schema.validate(frame.lazy(), lazy=True).collect()


def validate_floor_seconds(
    frame: pl.DataFrame, *, runs: int = 3, ctx: ValidationContext | None = None
) -> float:
    """Best-of-`runs` seconds of the plain pandera validation of parsed lab rows `frame`."""
    schema = floor_schema(ctx or validation_context())
    return best_of(runs, lambda: validate_floor(frame, schema))


def _hmac_keys(mrns: pl.Series, tenant: str, key: bytes) -> pl.Series:
    """Hex HMAC-SHA256 of f"{tenant}|{mrn}" per distinct MRN, mapped back (null stays null)."""
    distinct = mrns.drop_nulls().unique()
    base = hmac.new(key, digestmod="sha256")
    digests = []
    for mrn in distinct.to_list():
        mac = base.copy()
        mac.update(f"{tenant}|{mrn}".encode())
        digests.append(mac.hexdigest())
    return mrns.replace_strict(distinct, digests, default=None, return_dtype=pl.String)


def transform_floor(valid: pl.DataFrame, ctx: TransformContext) -> pl.DataFrame:
    """The transform's output columns from one plain polars select (plus the HMAC pass)."""
    table = ctx.mappings["local_test_code"]
    codes = table["local_test_code"].to_list()
    quantitative = table.filter(pl.col("quantitative").str.to_lowercase() == "true")
    keys = _hmac_keys(valid["patient_mrn"].str.strip_chars(), ctx.tenant, ctx.pseudonym_key)

    def text(column: str) -> pl.Expr:
        return pl.col(column).str.strip_chars()

    def blank_null(column: str) -> pl.Expr:
        return pl.when(text(column) != "").then(text(column)).alias(column)

    def instant(column: str) -> pl.Expr:
        value = text(column)
        aware = value.str.to_datetime(
            "%Y-%m-%dT%H:%M:%S%#z", strict=False, time_unit="us", time_zone="UTC"
        )
        naive = pl.coalesce(
            value.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us"),
            value.str.to_datetime("%Y-%m-%d %H:%M", strict=False, time_unit="us"),
        )
        local = naive.dt.replace_time_zone(ctx.timezone, ambiguous="null", non_existent="null")
        return pl.coalesce(aware, local.dt.convert_time_zone("UTC")).alias(column)

    code = text("local_test_code")
    return valid.select(
        text("record_id"),
        pl.lit(keys).alias("patient_key"),
        code.replace_strict(codes, table["loinc_code"], default=None).alias("loinc_code"),
        code.replace_strict(codes, table["loinc_display"], default=None).alias("loinc_display"),
        code,
        text("test_name"),
        text("result_value"),
        pl.when(code.is_in(quantitative["local_test_code"].implode()))
        .then(text("result_value").cast(pl.Float64, strict=False))
        .alias("result_value_numeric"),
        blank_null("result_unit"),
        blank_null("reference_range"),
        blank_null("abnormal_flag"),
        text("result_status"),
        instant("specimen_collected_at"),
        instant("resulted_at"),
        text("patient_sex").str.to_uppercase(),
        text("patient_first_name"),
        text("patient_last_name"),
        text("patient_dob").str.to_date("%Y-%m-%d", strict=False),
        text("patient_zip"),
        text("ordering_provider_npi"),
        pl.col(ROW_COLUMN),
    )


def transform_floor_seconds(
    frame: pl.DataFrame, *, runs: int = 3, ctx: TransformContext | None = None
) -> float:
    """Best-of-`runs` seconds of the plain polars transform of lab rows `frame` (valid ones)."""
    tctx = ctx or transform_context()
    return best_of(runs, lambda: transform_floor(frame, tctx))


# -- bench.run_bench's entry --------------------------------------------------------------


def parse_whole(plaintext: bytes) -> pl.DataFrame:
    """The file's data records as strings with ROW_COLUMN, as the pipeline's reader gives them."""
    end = plaintext.rstrip(b"\n").rfind(b"\n") + 1  # the trailer is the last line
    if not plaintext[end:].startswith(b"TRAILER,"):
        raise ValueError("the bench file has no trailer line")
    return pl.read_csv(
        plaintext[:end],
        has_header=True,
        schema=dict.fromkeys(COLUMNS, pl.String),
        empty_string_is_null=False,
        null_values=None,
        try_parse_dates=False,
        row_index_name=ROW_COLUMN,
        row_index_offset=1,
    )


def measure_stage_floors(
    config_dir: Path, feed: str, ciphertext: Path, secrets: Path, file_date: date, runs: int
) -> dict[str, Any]:
    """The validate and transform floors (see module) on a run_bench file, parsed whole.

    Keys: validate_s, transform_s (the floors), hmac_s (the transform's own HMAC part,
    `pseudonymize`), distinct_mrns, decrypt_parse_s (not timed for the floors).
    """
    # bench.floors (decryption) and the feed config load only for run_bench's child.
    from bench.floors import DecryptKeys, decrypt_plaintext

    from batchbridge.config.loader import load_feed
    from batchbridge.connectors.secrets import resolve_secret
    from batchbridge.validations.mapping import load_feed_mappings

    loaded = load_feed(feed, config_dir)
    config = loaded.config
    mappings = load_feed_mappings(loaded, LAB_RESULTS)
    key = resolve_secret(config.pseudonym_key, base_dir=loaded.base_dir).get_secret_value()
    vctx = ValidationContext(
        tenant=config.tenant, file_date=file_date, timezone=config.timezone, mappings=mappings
    )
    tctx = TransformContext(
        tenant=config.tenant,
        timezone=config.timezone,
        mappings=mappings,
        pseudonym_key=key.encode(),
    )
    started = time.perf_counter()
    frame = parse_whole(decrypt_plaintext(ciphertext, DecryptKeys.from_secrets(secrets)))
    parse_s = time.perf_counter() - started

    validate_s = validate_floor_seconds(frame, runs=runs, ctx=vctx)
    valid = LAB_RESULTS.validate(frame, vctx).valid  # not timed: the transform's input
    transform_s = transform_floor_seconds(valid, runs=runs, ctx=tctx)
    mrns = valid.get_column("patient_mrn")
    hmac_s = best_of(runs, lambda: pseudonymize(mrns, tenant=tctx.tenant, key=tctx.pseudonym_key))
    return {
        "validate_s": validate_s,
        "transform_s": transform_s,
        "hmac_s": hmac_s,
        "distinct_mrns": mrns.str.strip_chars().n_unique(),
        "decrypt_parse_s": parse_s,
    }


# -- the report ---------------------------------------------------------------------------


def _chunks(frame: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    return [frame.slice(start, size) for start in range(0, frame.height, size)]


Timings = dict[str, tuple[float, float]]
"""Stage name -> (wall, CPU) seconds."""


def measure(frame: pl.DataFrame, runs: int) -> Timings:
    """Best-of seconds of validate, transform and both floors over `frame`."""
    vctx, tctx = validation_context(), transform_context()
    valid = LAB_RESULTS.validate(frame, vctx).valid
    schema = floor_schema(vctx)
    return {
        "validate": timed(runs, lambda: LAB_RESULTS.validate(frame, vctx)),
        "validate_floor": timed(runs, lambda: validate_floor(frame, schema)),
        "transform": timed(runs, lambda: LAB_RESULTS.transform(valid, tctx)),
        "transform_floor": timed(runs, lambda: transform_floor(valid, tctx)),
    }


def measure_chunks(chunks: list[pl.DataFrame], runs: int) -> Timings:
    """Best-of seconds of each stage summed over `chunks`, divided by the chunk count."""
    vctx, tctx = validation_context(), transform_context()
    valids = [LAB_RESULTS.validate(chunk, vctx).valid for chunk in chunks]
    schema = floor_schema(vctx)

    def each(
        work: Callable[[pl.DataFrame], object], frames: list[pl.DataFrame]
    ) -> tuple[float, float]:
        wall, cpu = timed(runs, lambda: [work(f) for f in frames])
        return wall / len(frames), cpu / len(frames)

    return {
        "validate": each(lambda f: LAB_RESULTS.validate(f, vctx), chunks),
        "validate_floor": each(lambda f: validate_floor(f, schema), chunks),
        "transform": each(lambda f: LAB_RESULTS.transform(f, tctx), valids),
        "transform_floor": each(lambda f: transform_floor(f, tctx), valids),
    }


def check_floor_output(frame: pl.DataFrame) -> int:
    """Rows where the transform floor's output differs from the transform's (should be 0)."""
    valid = LAB_RESULTS.validate(frame, validation_context()).valid
    ours = LAB_RESULTS.transform(valid, transform_context())
    floor = transform_floor(valid, transform_context())
    if ours.schema != floor.schema:
        raise AssertionError(f"floor dtypes differ: {ours.schema} vs {floor.schema}")
    same = pl.all_horizontal(pl.col(c).eq_missing(floor.get_column(c)) for c in ours.columns)
    return int(ours.select((~same).sum()).item())


def report(title: str, seconds: Timings) -> str:
    """Each stage, its floor, and the stage/floor ratios: wall seconds (CPU seconds)."""
    lines = [f"{title}  wall s (cpu s)"]
    for stage in ("validate", "transform"):
        (own, own_cpu), (floor, floor_cpu) = seconds[stage], seconds[f"{stage}_floor"]
        lines.append(
            f"  {stage:<9} {own:7.3f} ({own_cpu:6.3f})   floor {floor:7.3f} ({floor_cpu:6.3f})"
            f"   ratio {own / floor:5.2f}x ({own_cpu / floor_cpu:4.2f}x)"
        )
    return "\n".join(lines)


def profile(frame: pl.DataFrame, top: int) -> str:
    """cProfile of one validate and one transform: the `top` functions by cumulative time."""
    vctx, tctx = validation_context(), transform_context()
    profiler = cProfile.Profile()
    profiler.enable()
    valid = LAB_RESULTS.validate(frame, vctx).valid
    LAB_RESULTS.transform(valid, tctx)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the file")
    parser.add_argument("--chunk", type=int, default=CHUNK_ROWS, help="rows per streamed chunk")
    parser.add_argument("--repeat", type=int, default=3, help="runs timed; the best counts")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    frame = make_frame(args.rows)
    print(f"{frame.height} rows parsed in {time.perf_counter() - started:.1f} s (not timed)")
    mismatched = check_floor_output(frame)
    print(f"transform floor output differs from the transform's in {mismatched} rows")
    if args.profile:
        print(profile(frame, args.top))
    title = f"whole file, {frame.height} rows, best of {args.repeat}:"
    print(report(title, measure(frame, args.repeat)))
    chunks = _chunks(frame, args.chunk)
    if len(chunks) > 1:
        title = f"per {args.chunk}-row chunk ({len(chunks)} chunks, best of {args.repeat}):"
        print(report(title, measure_chunks(chunks, args.repeat)))
    return 0 if mismatched == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
