"""The header lines of a delimited file: an optional control record, then the column names.

A header cell can hold anything (a shifted data row, a pasted value): messages name
our columns and positions, never the partner's text.
"""

from __future__ import annotations

import csv
import difflib
from collections import Counter
from collections.abc import Collection, Sequence

from batchbridge.config import FormatConfig
from batchbridge.errors import MalformedFileError, SchemaDriftError

QUOTE = b'"'
MAX_COUNT_DIGITS = 18  # a declared count (header record, trailer) this long is no row count
_NAME_LIMIT = 64  # longest column name echoed in a drift message
_LISTED = 10  # header problems named one by one in a message; the rest are counted


def parse_header_record(raw: bytes, fmt: FormatConfig) -> int:
    """The row count a control record like 'H|<sender>|<yyyymmdd>|<count>' declares."""
    spec = fmt.header_record
    assert spec is not None
    try:
        fields = raw.removesuffix(b"\r").decode("utf-8").split(fmt.delimiter)
    except UnicodeDecodeError:
        raise MalformedFileError("header record (line 1) is not valid text") from None
    if fields[0].strip() != spec.prefix:
        raise MalformedFileError(
            f"line 1 is not a header record: it must start with '{spec.prefix}{fmt.delimiter}'"
        )
    if len(fields) < spec.count_field:
        raise MalformedFileError(
            f"header record (line 1) has {len(fields)} fields; "
            f"the row count belongs in field {spec.count_field}"
        )
    digits = fields[spec.count_field - 1].strip()
    if not digits.isascii() or not digits.isdigit() or len(digits) > MAX_COUNT_DIGITS:
        raise MalformedFileError(
            f"header record (line 1) field {spec.count_field} is not a row count"
        )
    if spec.expected_sender is not None and spec.sender_field is not None:
        sender = fields[spec.sender_field - 1].strip() if len(fields) >= spec.sender_field else ""
        if sender != spec.expected_sender:
            # The sender field is partner text: say it differs, do not echo it.
            raise MalformedFileError(
                f"header record (line 1) names another sender than {spec.expected_sender!r} "
                f"in field {spec.sender_field}"
            )
    return int(digits)


def parse_header(raw: bytes, fmt: FormatConfig, quoting: bool, prefix: int) -> list[str]:
    """The column names of the header line; `prefix` is its byte offset in the file."""
    raw = raw.removesuffix(b"\r")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedFileError(
            f"not valid UTF-8 at byte offset {prefix + exc.start} (line 1)"
        ) from None
    if quoting and raw.count(QUOTE) % 2:
        raise MalformedFileError("header record (line 1) has an unclosed quote")
    allow_fields_of(len(raw))
    reader = csv.reader(
        [text],
        delimiter=fmt.delimiter,
        quotechar='"',
        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
        strict=True,
    )
    try:
        return next(reader)
    except csv.Error:
        raise MalformedFileError("header record (line 1) is not valid delimited text") from None


def allow_fields_of(size: int) -> None:
    """Let the csv module read fields up to `size` characters (polars has no such limit).

    Its default limit (128 KiB) made a long but valid field fail as "quoting is broken",
    so a later broken record was reported at the wrong place. The limit is process-wide:
    it is only ever raised, which is safe when threads parse at the same time.
    """
    if csv.field_size_limit() < size:
        csv.field_size_limit(size)


def _shown(name: str) -> str:
    return repr(name if len(name) <= _NAME_LIMIT else name[:_NAME_LIMIT] + "…")


def _describe_unknown(
    names: Sequence[str], strangers: Collection[str], columns: tuple[str, ...]
) -> str:
    """Where unexpected header cells are, naming only OUR columns, never the partner's text.

    A header cell can hold anything (a shifted data row, a pasted value), so it is not
    echoed: the position is given, with the expected column it most resembles, if any.
    Only the first few are listed: a header line can hold any number of fields, and the
    message goes to logs and alerts.
    """
    described: list[str] = []
    total = 0
    for position, name in enumerate(names, start=1):
        if name not in strangers:
            continue
        total += 1
        if len(described) == _LISTED:
            continue
        if name in columns:
            described.append(f"{_shown(name)} (position {position})")
            continue
        close: list[str] = []
        if len(name) <= 2 * _NAME_LIMIT:  # a longer cell cannot be a misspelt column name
            close = difflib.get_close_matches(name.strip().lower(), columns, n=1, cutoff=0.75)
        hint = f", close to expected {_shown(close[0])}" if close else ""
        described.append(f"position {position} (name withheld{hint})")
    if total > len(described):
        described.append(f"and {total - len(described)} more")
    return ", ".join(described)


def check_header(names: Sequence[str], columns: tuple[str, ...]) -> None:
    """SchemaDriftError unless `names` are exactly the schema's `columns`, in any order."""
    # Counted once: a hostile header line may hold hundreds of thousands of fields.
    counts = Counter(names)
    duplicates = {name for name, count in counts.items() if count > 1}
    missing = [column for column in columns if column not in counts]
    expected = set(columns)
    unknown = {name for name in counts if name not in expected}
    if len(missing) == len(columns):
        # Nothing matches: most likely the header is missing and line 1 is data, so
        # its fields could be patient values. Describe it without echoing them.
        raise SchemaDriftError(
            f"header (line 1) has none of the {len(columns)} expected columns "
            f"({len(names)} fields found); is the header missing?"
        )
    problems = []
    if missing:
        problems.append("missing columns: " + ", ".join(_shown(n) for n in missing))
    if unknown:
        problems.append("unknown columns: " + _describe_unknown(names, unknown, columns))
    if duplicates:
        problems.append("duplicate columns: " + _describe_unknown(names, duplicates, columns))
    if problems:
        raise SchemaDriftError("schema drift: " + "; ".join(problems))
