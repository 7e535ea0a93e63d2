"""Reusable row rules as polars expressions (True = passes), plus pandera adapters.

Conventions every rule follows, so a row gets one clear reason per problem:

- A rule returns a Boolean expression that is never null: True where the row passes.
- Values are compared after trimming surrounding whitespace.
- A *missing* value (null, empty or blank) passes every rule except `required`:
  presence is its own rule, so an empty birth date is quarantined as
  `patient_dob:required`, not also as `patient_dob:iso_date`.
- Parsers (`parse_*`) return the typed value, or null when the value is missing
  or invalid; the rules and the transforms share them, so they never disagree.

The functions are plain polars and unit-testable without pandera;
`column_check` wraps one as a named pandera check for a schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

ColumnLike = str | pl.Expr

NPI_PATTERN = r"^[0-9]{10}$"
ISO_DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
US_DATE_PATTERN = r"^[0-9]{2}/[0-9]{2}/[0-9]{4}$"
DATE_FORMATS: dict[str, tuple[str, str]] = {
    "YYYY-MM-DD": (ISO_DATE_PATTERN, "%Y-%m-%d"),
    "MM/DD/YYYY": (US_DATE_PATTERN, "%m/%d/%Y"),
}
"""Date layouts a feed may use: name -> (strict shape, strptime format)."""
# Date, 'T' (or the space RFC 3339 allows), hh:mm[:ss[.fraction]], then an optional
# zone: 'Z' or ±hh[[:]mm]. Named groups become struct fields in `extract_groups`.
ISO_DATETIME_PATTERN = (
    r"^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[T ]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?"
    r"(?P<zone>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?$"
)
# Plain decimal notation only: no exponent, no 'NaN'/'inf', no '<5' style qualifiers.
NUMERIC_PATTERN = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"


def _col(column: ColumnLike) -> pl.Expr:
    return pl.col(column) if isinstance(column, str) else column


def trimmed(column: ColumnLike) -> pl.Expr:
    """The value with surrounding whitespace removed (null stays null)."""
    return _col(column).str.strip_chars()


def present(column: ColumnLike) -> pl.Expr:
    """True where the value is neither null nor blank after trimming."""
    value = _col(column)
    return (value.is_not_null() & (value.str.strip_chars() != "")).fill_null(False)


def required(column: ColumnLike) -> pl.Expr:
    """Rule: the value is present (not null, not blank)."""
    return present(column)


def _when_present(column: ColumnLike, condition: pl.Expr) -> pl.Expr:
    """Apply `condition` only to present values; missing ones pass (see module doc)."""
    return pl.when(present(column)).then(condition.fill_null(False)).otherwise(True)


def matches(column: ColumnLike, pattern: str) -> pl.Expr:
    """Rule: the trimmed value matches `pattern` (anchor it with ^…$ for a full match)."""
    return _when_present(column, trimmed(column).str.contains(pattern))


def one_of(
    column: ColumnLike, options: Iterable[str], *, case_insensitive: bool = False
) -> pl.Expr:
    """Rule: the trimmed value is one of `options` (optionally ignoring case)."""
    allowed = list(options)
    value = trimmed(column)
    if case_insensitive:
        value = value.str.to_uppercase()
        allowed = [option.upper() for option in allowed]
    return _when_present(column, value.is_in(allowed))


def npi_digits_valid(column: ColumnLike) -> pl.Expr:
    """True where the trimmed value is 10 digits passing the NPI Luhn check, else False.

    NPI check digit: Luhn over the card-issuer prefix '80840' followed by the first 9
    digits. Doubling every other digit from the right of the 9-digit base and adding
    the prefix's fixed contribution (24) gives the same result without string concat.
    """
    value = trimmed(column)
    number = pl.when(value.str.contains(NPI_PATTERN)).then(value.cast(pl.Int64, strict=False))
    # Inside a struct, pl.field("n") reads the parsed number instead of re-running
    # the regex and cast for every digit (polars does not share subexpressions here).
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
    return _when_present(column, npi_digits_valid(column))


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


def date_format(column: ColumnLike, layout: str) -> pl.Expr:
    """Rule: a real calendar date written as `layout` (e.g. 'MM/DD/YYYY')."""
    return _when_present(column, parse_date(column, layout).is_not_null())


def iso_date(column: ColumnLike) -> pl.Expr:
    """Rule: `YYYY-MM-DD` and a real calendar date."""
    return date_format(column, "YYYY-MM-DD")


def date_in_range(
    column: ColumnLike, min_date: date, max_date: date, layout: str = "YYYY-MM-DD"
) -> pl.Expr:
    """Rule: the date lies within [min_date, max_date]; values that are not dates pass.

    Not-a-date is the format rule's reason; this rule reports only the range.
    """
    inside = parse_date(column, layout).is_between(
        pl.lit(min_date), pl.lit(max_date), closed="both"
    )
    return inside.fill_null(True)


def date_not_before(later: ColumnLike, earlier: ColumnLike, layout: str) -> pl.Expr:
    """Rule: date `later` is not before date `earlier`; passes when either is unusable."""
    return (parse_date(later, layout) >= parse_date(earlier, layout)).fill_null(True)


def iso_datetime_facts(column: ColumnLike, timezone: str) -> pl.Expr:
    """Everything the date-time rules need, from one regex pass, as a struct.

    Fields (rules are True where the row passes; missing values pass them all):
    - iso_datetime: ISO 8601 date-time, real date and clock time, valid zone if any;
    - local_time_exists: a naive value is not in `timezone`'s spring-forward gap;
    - local_time_unambiguous: a naive value is not in the repeated fall-back hour;
    - utc: the instant as Datetime('us', 'UTC'), null when missing, invalid,
      non-existent or ambiguous (choosing an offset would invent data).
    A value with 'Z' or an offset is converted from that offset; a naive value is
    wall-clock time in `timezone`.

    Compute it once per column (e.g. as a helper column) when several rules need it:
    polars does not share subexpressions across when/then branches.
    """
    # fill_null(""): a null input would make the whole struct null, and with it the
    # rule fields; an empty string gives a struct of null parts instead.
    parts = trimmed(column).fill_null("").str.extract_groups(ISO_DATETIME_PATTERN)
    f = pl.field
    fields = parts.struct.with_fields(
        day=f("date").str.to_date("%Y-%m-%d", strict=False),
        hh=f("hour").cast(pl.Int64),
        mi=f("minute").cast(pl.Int64),
        ss=f("second").cast(pl.Int64).fill_null(0),
        # Keep microseconds: first 6 fraction digits, right-padded ('.5' = 500000 µs).
        us=f("fraction").str.slice(0, 6).str.pad_end(6, "0").cast(pl.Int64).fill_null(0),
        zh=f("zone").str.slice(1, 2).cast(pl.Int64, strict=False),
        zm=pl.when(f("zone").str.len_chars() > 3)
        .then(f("zone").str.slice(-2, 2).cast(pl.Int64, strict=False))
        .otherwise(0),
        has_zone=f("zone").is_not_null(),
        present=present(column),
    )
    fields = fields.struct.with_fields(
        naive=pl.when((f("hh") <= 23) & (f("mi") <= 59) & (f("ss") <= 59))
        .then(
            f("day").cast(pl.Datetime("us"))
            + pl.duration(hours=f("hh"), minutes=f("mi"), seconds=f("ss"), microseconds=f("us"))
        )
        .otherwise(None),
        offset=pl.when(f("zone") == "Z")
        .then(0)
        .when((f("zh") <= 23) & (f("zm") <= 59))
        .then(
            pl.when(f("zone").str.starts_with("-")).then(-1).otherwise(1) * (f("zh") * 60 + f("zm"))
        )
        .otherwise(None),
    )
    fields = fields.struct.with_fields(
        earliest=f("naive").dt.replace_time_zone(
            timezone, ambiguous="earliest", non_existent="null"
        ),
        latest=f("naive").dt.replace_time_zone(timezone, ambiguous="latest", non_existent="null"),
        shifted=(f("naive") - pl.duration(minutes=f("offset"))).dt.replace_time_zone("UTC"),
        valid=f("naive").is_not_null() & (~f("has_zone") | f("offset").is_not_null()),
    )
    local = ~f("has_zone") & f("naive").is_not_null()
    fields = fields.struct.with_fields(
        iso_datetime=~f("present") | f("valid").fill_null(False),
        local_time_exists=~local | f("earliest").is_not_null(),
        local_time_unambiguous=~local
        | f("earliest").is_null()
        | (f("earliest") == f("latest")).fill_null(False),
        utc=pl.when(~f("present") | ~f("valid"))
        .then(None)
        .when(f("has_zone"))
        .then(f("shifted"))
        .when(f("earliest") == f("latest"))
        .then(f("earliest").dt.convert_time_zone("UTC"))
        .otherwise(None),
    )
    # The struct also carries the intermediate fields; only the four above are API.
    return fields


def parse_iso_datetime(column: ColumnLike, timezone: str) -> pl.Expr:
    """The instant as Datetime('us', 'UTC'), or null (see `iso_datetime_facts`)."""
    return iso_datetime_facts(column, timezone).struct.field("utc")


def iso_datetime(column: ColumnLike) -> pl.Expr:
    """Rule: an ISO 8601 date-time with a real date and clock time (zone optional)."""
    return iso_datetime_facts(column, "UTC").struct.field("iso_datetime")


def local_time_exists(column: ColumnLike, timezone: str) -> pl.Expr:
    """Rule: a naive date-time is not in `timezone`'s spring-forward gap."""
    return iso_datetime_facts(column, timezone).struct.field("local_time_exists")


def local_time_unambiguous(column: ColumnLike, timezone: str) -> pl.Expr:
    """Rule: a naive date-time is not in `timezone`'s repeated fall-back hour."""
    return iso_datetime_facts(column, timezone).struct.field("local_time_unambiguous")


def not_after(earlier: ColumnLike, later: ColumnLike, timezone: str) -> pl.Expr:
    """Rule: instant `earlier` is not after instant `later`; passes when either is unusable."""
    return instant_not_after(
        parse_iso_datetime(earlier, timezone), parse_iso_datetime(later, timezone)
    )


def instant_not_after(earlier: pl.Expr, later: pl.Expr) -> pl.Expr:
    """Rule on parsed instants: `earlier` <= `later`; passes when either is null."""
    return (earlier <= later).fill_null(True)


def unique(column: ColumnLike) -> pl.Expr:
    """Rule: the trimmed value occurs once; every row of a duplicated value fails."""
    # Missing values are `required`'s business, not duplicates of each other.
    key = pl.when(present(column)).then(trimmed(column))
    return _when_present(column, ~key.is_duplicated())


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
    return _when_present(column, is_numeric(column))


def column_check(rule: str, rule_expr: Callable[[pl.Expr], pl.Expr]) -> pa.Check:
    """A pandera column check named `rule` that evaluates `rule_expr(column)`.

    The check function sees the whole frame, so `rule_expr` may read other columns
    (e.g. a unit rule that looks at the value). Its output is one Boolean per row.
    """

    def check(data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(rule_expr(pl.col(data.key)).alias(data.key))

    return pa.Check(check, name=rule, error=rule)
