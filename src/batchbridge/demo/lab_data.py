"""Synthetic lab_results files (no real patients) for the demo, the tests and the benchmark.

Everything is vectorised polars: randomness comes from seeded row hashes, so the
same (n, seed, file_date, bad_rows, canary_names) always gives the same frame,
and a million rows take a few seconds. The lab's tests and names are in
lab_catalogue, the bad rows it plants in bad_rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import polars as pl

from batchbridge.demo.bad_rows import BAD_ROW_KINDS, expected_quarantined, plant_rows
from batchbridge.demo.lab_catalogue import FIRST_NAMES, LAB_TESTS, LAST_NAMES, mapping_frame
from batchbridge.validations.schemas.lab_results import COLUMNS

__all__ = [
    "LAB_COLUMNS",
    "LAB_TESTS",
    "expected_quarantined",
    "generate_lab_rows",
    "mapping_frame",
    "render_lab_csv",
]

LAB_COLUMNS: tuple[str, ...] = COLUMNS
"""The lab_results file columns, in the order the generator writes them."""

_MRN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _hash_seed(*parts: int) -> int:
    """A valid polars hash seed (unsigned 64-bit) from any integers, negative seeds too."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % 2**64
    return value


class _Random:
    """Seeded per-row randomness from polars' row hashing (fast and reproducible)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self._salt = 0
        self._index = pl.int_range(0, n, eager=True, dtype=pl.UInt64)

    def ints(self, upper: int) -> pl.Series:
        """Uniform integers in [0, upper)."""
        self._salt += 1
        return self._index.hash(_hash_seed(self.seed, self._salt)) % max(upper, 1)

    def uniform(self) -> pl.Series:
        """Uniform floats in (0, 1)."""
        return (self.ints(2**52).cast(pl.Float64) + 0.5) / float(2**52)

    def normal(self) -> pl.Series:
        """Standard normal draws (Box-Muller)."""
        u1, u2 = self.uniform(), self.uniform()
        return (-2.0 * u1.log()).sqrt() * (2.0 * 3.141592653589793 * u2).cos()


def _pick(choices: Sequence[str], index: pl.Series) -> pl.Series:
    return pl.Series(list(choices), dtype=pl.String).gather(index)


def _npi_with_check_digit(base: pl.Series) -> pl.Series:
    """Append the NPI Luhn check digit (prefix 80840 contributes 24) to 9-digit bases."""
    total = pl.Series([24] * len(base), dtype=pl.Int64)
    for i in range(9):
        digit = (base // (10 ** (8 - i))) % 10
        if i % 2 == 0:  # the rightmost base digit (i = 8) and every second one leftwards
            doubled = digit * 2
            total = total + doubled - (doubled > 9).cast(pl.Int64) * 9
        else:
            total = total + digit
    check = (10 - total % 10) % 10
    return (base * 10 + check).cast(pl.String)


def _format_datetimes(utc: pl.Series, timezone: str, style: pl.Series) -> pl.Series:
    """Render instants in a mix of ISO 8601 spellings partners really send."""
    local = utc.dt.convert_time_zone(timezone)
    frame = pl.DataFrame({"local": local, "utc": utc, "style": style})
    return frame.select(
        pl.when(pl.col("style") == 0)
        .then(pl.col("local").dt.strftime("%Y-%m-%dT%H:%M:%S"))
        .when(pl.col("style") == 1)
        .then(pl.col("local").dt.strftime("%Y-%m-%dT%H:%M:%S%.3f"))
        .when(pl.col("style") == 2)
        .then(pl.col("utc").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .when(pl.col("style") == 3)
        .then(pl.col("local").dt.strftime("%Y-%m-%dT%H:%M:%S%:z"))
        .otherwise(pl.col("local").dt.strftime("%Y-%m-%d %H:%M"))
    ).to_series()


def generate_lab_rows(
    n: int,
    *,
    seed: int,
    file_date: date,
    bad_rows: dict[str, int] | None = None,
    canary_names: list[str] | None = None,
    timezone: str = "America/Chicago",
) -> pl.DataFrame:
    """`n` lab_results rows as strings, valid unless planted otherwise.

    bad_rows: kind -> count, kinds from BAD_ROW_KINDS; each kind is planted on
    distinct rows that are otherwise valid, so every planted row has exactly the
    kind's reasons (see `expected_quarantined` for the total).
    canary_names: each name becomes the first name of one valid row and the last
    name of another, and the first name of one planted bad row when there are
    any: PHI-leak tests search every output for them.
    Naive timestamps are wall-clock times in `timezone`, 06:00-23:00, so they
    never fall into a DST gap or overlap.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    bad_rows = dict(bad_rows or {})
    canary_names = list(canary_names or [])
    unknown = sorted(set(bad_rows) - set(BAD_ROW_KINDS))
    if unknown:
        raise ValueError(f"unknown bad_rows kinds {unknown}; known: {sorted(BAD_ROW_KINDS)}")
    planted = expected_quarantined(bad_rows)
    needed = planted + 2 * len(canary_names)
    if needed > n:
        raise ValueError(f"{n} rows are too few for {needed} planted rows")

    rng = _Random(n, seed)
    frame = _valid_rows(n, rng, file_date, timezone)
    if planted or canary_names:
        frame = plant_rows(frame, seed, file_date, bad_rows, canary_names)
    return frame.select(LAB_COLUMNS)


def _valid_rows(n: int, rng: _Random, file_date: date, timezone: str) -> pl.DataFrame:
    # Patients: about four results each; MRN, names, birth date, sex and ZIP are
    # drawn from hashes of the patient number so they repeat with the patient.
    patients = max(1, n // 4)
    patient = rng.ints(patients)
    digits = max(7, len(str(patients)))

    def per_patient(salt: int, upper: int) -> pl.Series:
        return patient.hash(_hash_seed(rng.seed, -1, salt)) % upper

    earliest_dob = date(1925, 1, 1)
    span_days = max(1, (file_date - earliest_dob).days - 1)
    providers = min(500, max(1, n))
    provider_base = 100_000_000 + (
        pl.int_range(0, providers, eager=True, dtype=pl.UInt64).hash(_hash_seed(rng.seed, -2))
        % 200_000_000
    ).cast(pl.Int64)
    draws = pl.DataFrame(
        {
            "patient": patient,
            "mrn_letters": pl.DataFrame(
                {f"c{i}": _pick(_MRN_ALPHABET, per_patient(10 + i, 26)) for i in range(3)}
            )
            .select(pl.concat_str(pl.all()))
            .to_series(),
            "first": _pick(FIRST_NAMES, per_patient(1, len(FIRST_NAMES))),
            "last": _pick(LAST_NAMES, per_patient(2, len(LAST_NAMES))),
            "dob_days": per_patient(3, span_days).cast(pl.Int64),
            "sex_draw": per_patient(4, 100),
            "zip5": per_patient(5, 100_000),
            "plus4": per_patient(6, 10_000),
            "zip_kind": per_patient(7, 5),
            "npi": _npi_with_check_digit(provider_base).gather(rng.ints(providers)),
            # Collected 06:00-18:00 local the day before the file, resulted 10 min to
            # 5 h later (before 23:00): never near a 02:00 DST change.
            "collected_s": rng.ints(12 * 3600).cast(pl.Int64),
            "turnaround_s": (600 + rng.ints(5 * 3600 - 600)).cast(pl.Int64),
        }
    )
    day_start = pl.lit(file_date - timedelta(days=1)).cast(pl.Datetime("us"))
    sex = (
        pl.when(pl.col("sex_draw") < 47)
        .then(pl.lit("F"))
        .when(pl.col("sex_draw") < 94)
        .then(pl.lit("M"))
        .when(pl.col("sex_draw") < 96)
        .then(pl.lit("f"))  # lower case is valid: the transform normalises it
        .when(pl.col("sex_draw") < 98)
        .then(pl.lit("O"))
        .otherwise(pl.lit("U"))
    )
    zip5 = pl.col("zip5").cast(pl.String).str.pad_start(5, "0")
    people = draws.select(
        record_id=pl.lit("R") + pl.int_range(1, n + 1).cast(pl.String).str.pad_start(9, "0"),
        patient_mrn=pl.col("mrn_letters")
        + (pl.col("patient") + 1).cast(pl.String).str.pad_start(digits, "0"),
        patient_first_name=pl.col("first"),
        patient_last_name=pl.col("last"),
        patient_dob=(pl.lit(earliest_dob) + pl.duration(days=pl.col("dob_days"))).dt.strftime(
            "%Y-%m-%d"
        ),
        patient_sex=sex,
        patient_zip=pl.when(pl.col("zip_kind") == 0)
        .then(zip5 + "-" + pl.col("plus4").cast(pl.String).str.pad_start(4, "0"))
        .otherwise(zip5),
        ordering_provider_npi=pl.col("npi"),
        collected_local=day_start + pl.duration(hours=6, seconds=pl.col("collected_s")),
        turnaround_s=pl.col("turnaround_s"),
    ).with_columns(
        resulted_local=pl.col("collected_local") + pl.duration(seconds=pl.col("turnaround_s"))
    )
    collected_utc = (
        people["collected_local"].dt.replace_time_zone(timezone).dt.convert_time_zone("UTC")
    )
    resulted_utc = (
        people["resulted_local"].dt.replace_time_zone(timezone).dt.convert_time_zone("UTC")
    )
    people = people.drop("collected_local", "resulted_local", "turnaround_s").with_columns(
        specimen_collected_at=_format_datetimes(collected_utc, timezone, rng.ints(5)),
        resulted_at=_format_datetimes(resulted_utc, timezone, rng.ints(5)),
    )

    tests = pl.DataFrame(
        {
            "code": [t.code for t in LAB_TESTS],
            "name": [t.test_name for t in LAB_TESTS],
            "unit": [t.unit for t in LAB_TESTS],
            "mean": [t.mean for t in LAB_TESTS],
            "sd": [t.sd for t in LAB_TESTS],
            "decimals": [t.decimals for t in LAB_TESTS],
            "low": [t.low for t in LAB_TESTS],
            "high": [t.high for t in LAB_TESTS],
            "range": [t.reference_range for t in LAB_TESTS],
            "values": [list(t.values) for t in LAB_TESTS],
        },
        schema_overrides={
            "values": pl.List(pl.String),
            "mean": pl.Float64,
            "sd": pl.Float64,
            "low": pl.Float64,
            "high": pl.Float64,
        },
    )
    rows = tests[rng.ints(len(LAB_TESTS))].with_columns(
        z=rng.normal(), pick=rng.ints(1_000_000), blank_range=rng.ints(20) == 0, status=rng.ints(20)
    )
    number = (pl.col("mean") + pl.col("sd") * pl.col("z")).clip(lower_bound=0)
    value_text = (
        pl.when(pl.col("values").list.len() > 0)
        .then(pl.col("values").list.get(pl.col("pick") % pl.col("values").list.len().clip(1)))
        .when(pl.col("decimals") == 0)
        .then(number.round(0).cast(pl.Int64).cast(pl.String))
        .when(pl.col("decimals") == 1)
        .then(number.round(1).cast(pl.String))
        .otherwise(number.round(2).cast(pl.String))
    )
    rows = rows.with_columns(value=value_text, number=number)
    quantitative = pl.col("values").list.len() == 0
    flag = (
        pl.when(quantitative & (pl.col("number") < pl.col("low")))
        .then(pl.lit("L"))
        .when(quantitative & (pl.col("number") > pl.col("high")))
        .then(pl.lit("H"))
        .when(quantitative)
        .then(pl.lit("N"))
        .when(pl.col("value") == pl.col("values").list.first())
        .then(pl.lit(""))
        .otherwise(pl.lit("A"))
    )
    status = (
        pl.when(pl.col("status") == 0)
        .then(pl.lit("C"))
        .when(pl.col("status") == 1)
        .then(pl.lit("P"))
        .otherwise(pl.lit("F"))
    )
    results = rows.select(
        local_test_code=pl.col("code"),
        test_name=pl.col("name"),
        result_value=pl.col("value"),
        result_unit=pl.col("unit"),
        reference_range=pl.when(pl.col("blank_range")).then(pl.lit("")).otherwise(pl.col("range")),
        abnormal_flag=flag,
        result_status=status,
        _quantitative=quantitative,
    )
    return people.hstack(results)


def render_lab_csv(
    df: pl.DataFrame, *, trailer: bool = True, crlf: bool = False, bom: bool = False
) -> bytes:
    """The frame as a partner file: RFC 4180 CSV, optional 'TRAILER,<n>', CRLF and BOM.

    Columns are written in the frame's order (reorder the frame to test header order).
    """
    newline = "\r\n" if crlf else "\n"
    body = df.write_csv(quote_style="necessary", line_terminator=newline).encode("utf-8")
    parts = [b"\xef\xbb\xbf" if bom else b"", body]
    if trailer:
        parts.append(f"TRAILER,{df.height}{newline}".encode("ascii"))
    return b"".join(parts)
