"""Reusable row rules as polars expressions (True = passes), and the parsers they share.

Conventions every rule follows, so a row gets one clear reason per problem:

- A rule returns a Boolean expression that is never null: True where the row passes.
- Values are compared after trimming surrounding whitespace. A rule set that trims
  every column once up front passes `Trimmed(column)`, so no rule trims it again.
- A *missing* value (null, empty or blank) passes every rule except `required`:
  presence is its own rule, so an empty birth date is quarantined as
  `patient_dob:required`, not also as `patient_dob:iso_date`.
- Parsers (`parse_*`, `IsoDateTime`) return the typed value, or null when the value is
  missing or invalid; the rules and the transforms share them, so they never disagree.

Work that several rules (and the transform) need is computed once, as helper columns
in *stages* (`Stages`: lists of aliased expressions, each stage reading the columns of
the ones before; `with_stages` applies them to a LazyFrame): polars does not share
subexpressions inside when/then, so a value parsed inside one big expression would be
parsed again for every branch that reads it.

The functions are plain polars and unit-testable without pandera.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import zip_longest

import polars as pl

NPI_PATTERN = r"^[0-9]{10}$"
ISO_DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
US_DATE_PATTERN = r"^[0-9]{2}/[0-9]{2}/[0-9]{4}$"
DATE_FORMATS: dict[str, tuple[str, str]] = {
    "YYYY-MM-DD": (ISO_DATE_PATTERN, "%Y-%m-%d"),
    "MM/DD/YYYY": (US_DATE_PATTERN, "%m/%d/%Y"),
}
"""Date layouts a feed may use: name -> (strict shape, strptime format)."""
# Date, 'T' (or the space RFC 3339 allows), hh:mm[:ss[.fraction]], then an optional
# zone: 'Z' or ±hh[[:]mm]. The groups name the parts (IsoDateTime finds them by position).
ISO_DATETIME_PATTERN = (
    r"^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[T ]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?"
    r"(?P<zone>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?$"
)
# The zone at the end of a value that has ISO_DATETIME_PATTERN's shape.
_ZONE_SUFFIX = r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)$"
# Plain decimal notation only: no exponent, no 'NaN'/'inf', no '<5' style qualifiers.
NUMERIC_PATTERN = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"

Stages = list[list[pl.Expr]]
"""Helper columns in dependency order: each stage's expressions read input columns and
the helper columns of earlier stages (see `with_stages`)."""


@dataclass(frozen=True)
class Trimmed:
    """A column (or expression) whose values are already trimmed: rules read it as is."""

    column: str | pl.Expr

    @property
    def expr(self) -> pl.Expr:
        return pl.col(self.column) if isinstance(self.column, str) else self.column


ColumnLike = str | pl.Expr | Trimmed


def merge_stages(*stages: Sequence[Sequence[pl.Expr]]) -> Stages:
    """Independent stage lists side by side: stage i of the result holds every list's stage i."""
    return [
        [expr for exprs in level for expr in exprs] for level in zip_longest(*stages, fillvalue=())
    ]


def with_stages(frame: pl.LazyFrame, stages: Iterable[Sequence[pl.Expr]]) -> pl.LazyFrame:
    """`frame` with every stage's helper columns added, one stage after the other."""
    for stage in stages:
        if stage:
            frame = frame.with_columns(stage)
    return frame


def trimmed(column: ColumnLike) -> pl.Expr:
    """The value with surrounding whitespace removed (null stays null)."""
    if isinstance(column, Trimmed):
        return column.expr
    value = pl.col(column) if isinstance(column, str) else column
    return value.str.strip_chars()


def trim_stage(columns: Iterable[str]) -> list[pl.Expr]:
    """A stage replacing each of `columns` by its trimmed value (read them as `Trimmed`)."""
    return [pl.col(column).str.strip_chars() for column in columns]


def present(column: ColumnLike) -> pl.Expr:
    """True where the value is neither null nor blank after trimming."""
    return (trimmed(column) != "").fill_null(False)


def required(column: ColumnLike) -> pl.Expr:
    """Rule: the value is present (not null, not blank)."""
    return present(column)


def when_present(column: ColumnLike, condition: pl.Expr) -> pl.Expr:
    """Rule: `condition` holds for present values; missing ones pass (see module doc)."""
    return pl.when(present(column)).then(condition.fill_null(False)).otherwise(True)


def matches(column: ColumnLike, pattern: str) -> pl.Expr:
    """Rule: the trimmed value matches `pattern` (anchor it with ^…$ for a full match)."""
    return when_present(column, trimmed(column).str.contains(pattern))


def one_of(
    column: ColumnLike, options: Iterable[str], *, case_insensitive: bool = False
) -> pl.Expr:
    """Rule: the trimmed value is one of `options` (optionally ignoring case)."""
    allowed = list(options)
    value = trimmed(column)
    if case_insensitive:
        value = value.str.to_uppercase()
        allowed = [option.upper() for option in allowed]
    return when_present(column, value.is_in(allowed))


def npi_digits_valid(column: ColumnLike) -> pl.Expr:
    """True where the trimmed value is 10 digits passing the NPI Luhn check, else False.

    NPI check digit: Luhn over the card-issuer prefix '80840' followed by the first 9
    digits. Doubling every other digit from the right of the 9-digit base and adding
    the prefix's fixed contribution (24) gives the same result without string concat.
    """
    value = trimmed(column)
    number = pl.when(value.str.contains(NPI_PATTERN)).then(value.cast(pl.Int64, strict=False))
    # Inside a one-field struct, pl.field("n") reads the parsed number instead of
    # re-running the regex and cast for every digit (no sharing inside when/then).
    n = pl.field("n")
    total: pl.Expr = pl.lit(24, dtype=pl.Int64)
    for i in range(9):
        digit = (n // (10 ** (9 - i))) % 10
        # Positions 1, 3, 5, 7, 9 from the left are doubled; a doubled digit >= 10
        # contributes its digit sum, i.e. 2d - 9.
        doubled = i % 2 == 0
        total = total + (digit * 2 - (digit >= 5).cast(pl.Int64) * 9 if doubled else digit)
    return (
        pl.struct(number.alias("n"))
        .struct.with_fields(ok=(10 - total % 10) % 10 == n % 10)
        .struct.field("ok")
        .fill_null(False)
    )


def npi_luhn(column: ColumnLike) -> pl.Expr:
    """Rule: 10 digits passing the NPI Luhn check (prefix 80840)."""
    return when_present(column, npi_digits_valid(column))


def parse_date(column: ColumnLike, layout: str = "YYYY-MM-DD") -> pl.Expr:
    """The value as a Date when it is a real date in `layout` (see DATE_FORMATS), else null."""
    pattern, strptime = DATE_FORMATS[layout]
    value = trimmed(column)
    # The regex guard matters: polars' parser alone accepts '2024-1-01'.
    return (
        pl.when(value.str.contains(pattern))
        .then(value.str.to_date(strptime, strict=False))
        .otherwise(None)
    )


def parse_iso_date(column: ColumnLike) -> pl.Expr:
    """The value as a Date when it is a real `YYYY-MM-DD` date, else null."""
    return parse_date(column, "YYYY-MM-DD")


def date_format(column: ColumnLike, layout: str, *, parsed: pl.Expr | None = None) -> pl.Expr:
    """Rule: a real calendar date written as `layout` (e.g. 'MM/DD/YYYY').

    `parsed`: the column's `parse_date(column, layout)`, when already computed.
    """
    date_value = parse_date(column, layout) if parsed is None else parsed
    return when_present(column, date_value.is_not_null())


def iso_date(column: ColumnLike) -> pl.Expr:
    """Rule: `YYYY-MM-DD` and a real calendar date."""
    return date_format(column, "YYYY-MM-DD")


def date_in_range(
    column: ColumnLike, min_date: date, max_date: date, layout: str = "YYYY-MM-DD"
) -> pl.Expr:
    """Rule: the date lies within [min_date, max_date]; values that are not dates pass.

    Not-a-date is the format rule's reason; this rule reports only the range.
    """
    return parsed_date_in_range(parse_date(column, layout), min_date, max_date)


def parsed_date_in_range(parsed: pl.Expr, min_date: date, max_date: date) -> pl.Expr:
    """Rule on a parsed date: within [min_date, max_date]; passes when null (not a date)."""
    inside = parsed.is_between(pl.lit(min_date), pl.lit(max_date), closed="both")
    return inside.fill_null(True)


def date_not_before(later: ColumnLike, earlier: ColumnLike, layout: str) -> pl.Expr:
    """Rule: date `later` is not before date `earlier`; passes when either is unusable."""
    return (parse_date(later, layout) >= parse_date(earlier, layout)).fill_null(True)


class IsoDateTime:
    """An ISO 8601 date-time column, parsed once into helper columns that its rules read.

    `stages` computes the helpers (names start with `prefix`); the properties are the
    rules and the parsed instant, reading them (True where the row passes; missing
    values pass every rule):
    - iso_datetime: ISO 8601 date-time, real date and clock time, valid zone if any;
    - local_time_exists: a naive value is not in `timezone`'s spring-forward gap;
    - local_time_unambiguous: a naive value is not in the repeated fall-back hour;
    - utc: the instant as Datetime('us', 'UTC'), null when missing, invalid,
      non-existent or ambiguous (choosing an offset would invent data).
    A value with 'Z' or an offset is converted from that offset; a naive value is
    wall-clock time in `timezone`. A fraction is kept to the microsecond (truncated).

    The parts are read by position (a value of the pattern's shape is ASCII with fixed
    offsets up to the minutes), so the regex runs once, as a match test, not a capture.
    """

    def __init__(self, column: ColumnLike, timezone: str, prefix: str) -> None:
        self.value = trimmed(column)
        self.timezone = timezone
        self.prefix = prefix
        self._present = present(column)

    def _col(self, name: str) -> pl.Expr:
        return pl.col(f"{self.prefix}{name}")

    def _helpers(self) -> list[dict[str, pl.Expr]]:
        t, c = self.value, self._col
        integer = pl.Int64

        def number(offset: int) -> pl.Expr:
            return t.str.slice(offset, 2).cast(integer, strict=False)

        shape = {
            "shape": t.str.contains(ISO_DATETIME_PATTERN),
            "day": t.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False),
            "hh": number(11),
            "mi": number(14),
            "has_sec": t.str.slice(16, 1) == ":",
            "zpos": t.str.find(_ZONE_SUFFIX),
            "len": t.str.len_bytes(),
        }
        # Rarely present parts are cut from a copy of the value that is null elsewhere,
        # so rows without them cost (almost) nothing.
        # After ':ss' (which ends at offset 19) comes a fraction, the zone or the end.
        fraction_end = c("zpos").fill_null(c("len"))
        with_fraction = c("has_sec") & (fraction_end > 19)
        parts = {
            "ss": pl.when(c("has_sec")).then(number(17)).otherwise(0),
            # Microseconds: the first 6 fraction digits, right-padded ('.5' = 500000 µs).
            "us": pl.when(with_fraction)
            .then(t)
            .str.slice(20, pl.min_horizontal(fraction_end - 20, 6))
            .str.pad_end(6, "0")
            .cast(integer, strict=False)
            .fill_null(0),
            "has_zone": c("shape") & c("zpos").is_not_null(),
            "zone": pl.when(c("shape")).then(t).str.slice(c("zpos")),
        }
        zone = c("zone")
        zh = zone.str.slice(1, 2).cast(integer, strict=False)
        zm = (
            pl.when(zone.str.len_bytes() > 3)
            .then(zone.str.slice(-2, 2).cast(integer, strict=False))
            .otherwise(0)
        )
        clock = (c("hh") * 60 + c("mi")) * 60 + c("ss")
        values = {
            "naive": pl.when(c("shape") & (c("hh") <= 23) & (c("mi") <= 59) & (c("ss") <= 59))
            .then(
                (c("day").cast(integer) * 86_400_000_000 + clock * 1_000_000 + c("us")).cast(
                    pl.Datetime("us")
                )
            )
            .otherwise(None),
            "offset": pl.when(zone == "Z")
            .then(0)
            .when((zh <= 23) & (zm <= 59))
            .then(pl.when(zone.str.starts_with("-")).then(-1).otherwise(1) * (zh * 60 + zm))
            .otherwise(None),
        }
        # Naive values in the zone: null where the wall-clock time does not exist (DST
        # gap) or happens twice (overlap). Only those rare rows are told apart after.
        local = {
            "local": pl.when(~c("has_zone"))
            .then(c("naive"))
            .dt.replace_time_zone(self.timezone, ambiguous="null", non_existent="null"),
        }
        odd = ~c("has_zone") & c("naive").is_not_null() & c("local").is_null()
        odd_earliest = {
            "odd_earliest": pl.when(odd)
            .then(c("naive"))
            .dt.replace_time_zone(self.timezone, ambiguous="earliest", non_existent="null"),
            "odd": odd,
        }
        return [shape, parts, values, local, odd_earliest]

    @property
    def stages(self) -> Stages:
        """The helper columns, in dependency order (see `with_stages`)."""
        return [
            [expr.alias(f"{self.prefix}{name}") for name, expr in stage.items()]
            for stage in self._helpers()
        ]

    @property
    def _valid(self) -> pl.Expr:
        return self._col("naive").is_not_null() & (
            ~self._col("has_zone") | self._col("offset").is_not_null()
        )

    @property
    def iso_datetime(self) -> pl.Expr:
        """Rule: an ISO 8601 date-time with a real date and clock time (zone optional)."""
        return ~self._present | self._valid

    @property
    def local_time_exists(self) -> pl.Expr:
        """Rule: a naive date-time is not in the time zone's spring-forward gap."""
        return ~self._col("odd") | self._col("odd_earliest").is_not_null()

    @property
    def local_time_unambiguous(self) -> pl.Expr:
        """Rule: a naive date-time is not in the time zone's repeated fall-back hour."""
        return ~self._col("odd") | self._col("odd_earliest").is_null()

    @property
    def utc(self) -> pl.Expr:
        """The instant as Datetime('us', 'UTC'), or null (see the class docstring)."""
        shifted = self._col("naive") - pl.duration(minutes=self._col("offset"))
        return (
            pl.when(~self._present | ~self._valid)
            .then(None)
            .when(self._col("has_zone"))
            .then(shifted.dt.replace_time_zone("UTC"))
            .otherwise(self._col("local").dt.convert_time_zone("UTC"))
        )


def instant_not_after(earlier: pl.Expr, later: pl.Expr) -> pl.Expr:
    """Rule on parsed instants: `earlier` <= `later`; passes when either is null."""
    return (earlier <= later).fill_null(True)


def unique(column: ColumnLike) -> pl.Expr:
    """Rule: the trimmed value occurs once; every row of a duplicated value fails."""
    # Missing values are `required`'s business, not duplicates of each other.
    key = pl.when(present(column)).then(trimmed(column))
    # Duplicates among 64-bit hashes first (about half the cost of comparing strings),
    # then the strings of those candidates only: a hash collision is not a duplicate.
    # The fields of a small struct are computed once and read by name (pl.field).
    f = pl.field
    duplicated = (
        pl.struct(key.alias("key"))
        .struct.with_fields(candidate=f("key").hash().is_duplicated())
        .struct.with_fields(
            duplicated=f("candidate") & pl.when(f("candidate")).then(f("key")).is_duplicated()
        )
        .struct.field("duplicated")
    )
    return when_present(column, ~duplicated)


def parse_numeric(column: ColumnLike) -> pl.Expr:
    """The value as Float64 when it is a plain decimal number, else null."""
    value = trimmed(column)
    return (
        pl.when(value.str.contains(NUMERIC_PATTERN))
        .then(value.cast(pl.Float64, strict=False))
        .otherwise(None)
    )


def is_numeric(column: ColumnLike) -> pl.Expr:
    """True where the value is a plain decimal number (False when missing)."""
    return parse_numeric(column).is_not_null()


def numeric(column: ColumnLike) -> pl.Expr:
    """Rule: a plain decimal number (sign and fraction allowed; no exponent or '<5')."""
    return when_present(column, is_numeric(column))
