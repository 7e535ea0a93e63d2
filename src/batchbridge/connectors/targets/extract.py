"""Extract files for outbound targets: CSV/Parquet bytes, formula neutralisation, remote names.

Pure functions (no I/O), so the rules below are tested without a server.

CSV: UTF-8 without BOM, a header of column names, CRLF line ends, fields quoted only
when needed (RFC 4180: a separator, a quote, CR or LF; quotes doubled). A null is an
empty field, an empty string is `""`. The header holds the configured column names as
they are (configuration, not partner data).

Formula neutralisation (OWASP "CSV injection"): a text cell whose first character is
`=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so a spreadsheet
shows it as text instead of running it. A text cell that is entirely a plain decimal
number (optional sign, digits, optional fraction and exponent, ASCII only, e.g. `-12.5`,
`+3`, `-1e-3`) is left as it is: such a cell cannot hold a formula, and prefixing it
would turn every negative lab value into text. Numeric, date and boolean columns are
written by polars as they are (a negative number is a number, never a formula). Parquet
is typed and is not neutralised.
"""

from __future__ import annotations

import hashlib
import io
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import polars as pl

from batchbridge.connectors.sources.names import display_name, remote_name_problem
from batchbridge.errors import ConfigError, TargetError

ExtractFormat = Literal["csv", "parquet"]

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP list)."""

_TRIGGER_PATTERN = "^[=+@\t\r-]"
_PLAIN_NUMBER_PATTERN = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_PLAIN_NUMBER = re.compile(_PLAIN_NUMBER_PATTERN)

NAME_PLACEHOLDERS = frozenset({"tenant", "feed", "source_stem", "file_id", "ext"})
"""Placeholders a target's `file_name` template may use."""
_PER_FILE_PLACEHOLDERS = frozenset({"source_stem", "file_id"})
# Suffixes stripped from the partner's file name to get {source_stem}, innermost last.
_SOURCE_SUFFIXES = frozenset(
    {"pgp", "gpg", "asc", "gz", "zip", "bz2", "csv", "tsv", "psv", "txt", "dat", "hl7", "parquet"}
)
_TOKEN_CHARS = 12
SIDECAR_SUFFIX = ".sha256"


def neutralise_cell(value: str) -> str:
    """The CSV text for one text cell: a leading `'` if it could start a formula."""
    if value.startswith(FORMULA_TRIGGERS) and _PLAIN_NUMBER.match(value) is None:
        return "'" + value
    return value


def neutralise_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """`neutralise_cell` over every text column (String, Categorical, Enum); nulls stay null."""
    exprs: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        if dtype == pl.String or dtype == pl.Categorical or isinstance(dtype, pl.Enum):
            text = pl.col(name).cast(pl.String)
            risky = text.str.contains(_TRIGGER_PATTERN) & ~text.str.contains(_PLAIN_NUMBER_PATTERN)
            exprs.append(pl.when(risky).then(pl.lit("'") + text).otherwise(text).alias(name))
    return frame.with_columns(exprs) if exprs else frame


def render_csv(frame: pl.DataFrame) -> bytes:
    """The frame as neutralised RFC 4180 CSV (see the module docstring)."""
    nested = [
        name
        for name, dtype in frame.schema.items()
        if dtype.is_nested() or dtype in (pl.Binary, pl.Object)
    ]
    if nested:
        raise TargetError(f"columns {nested} hold lists, structs or binary data; CSV cannot")
    buffer = io.BytesIO()
    neutralise_formulas(frame).write_csv(buffer, line_terminator="\r\n", quote_style="necessary")
    return buffer.getvalue()


def render_parquet(frame: pl.DataFrame) -> bytes:
    """The frame as one Parquet file (zstd, with statistics); same rows, same bytes."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=True)
    return buffer.getvalue()


def render_extract(frame: pl.DataFrame, file_format: ExtractFormat) -> bytes:
    """The extract's plaintext bytes in `file_format`."""
    if file_format == "csv":
        return render_csv(frame)
    return render_parquet(frame)


def extension(file_format: ExtractFormat, *, encrypted: bool) -> str:
    """The `{ext}` of a remote name: 'csv' or 'parquet', plus '.pgp' when encrypted."""
    return f"{file_format}.pgp" if encrypted else file_format


def check_name_template(template: str, target: str) -> None:
    """Refuse a `file_name` template that could not name one safe file per source file.

    Only the documented placeholders, without format specs or conversions; at least one
    of {source_stem} or {file_id} (otherwise every file would overwrite the last one);
    literal text without path separators.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"target {target}: file_name template is malformed ({exc})") from None
    used: set[str] = set()
    for literal, field, spec, conversion in parts:
        if "/" in literal or "\\" in literal:
            raise ConfigError(f"target {target}: file_name must not contain a path separator")
        if field is None:
            continue
        if field not in NAME_PLACEHOLDERS:
            valid = ", ".join(f"{{{name}}}" for name in sorted(NAME_PLACEHOLDERS))
            raise ConfigError(
                f"target {target}: file_name uses unknown placeholder {{{field}}} ({valid})"
            )
        if spec or conversion:
            raise ConfigError(
                f"target {target}: file_name placeholder {{{field}}} takes no format or conversion"
            )
        used.add(field)
    if not used & _PER_FILE_PLACEHOLDERS:
        raise ConfigError(
            f"target {target}: file_name must contain {{source_stem}} or {{file_id}} so that "
            "each source file gets its own extract"
        )


def source_stem(source_name: str) -> str:
    """The partner's file name without its data/encryption suffixes.

    'LAB_20240102.csv.pgp' -> 'LAB_20240102'; 'lab.v2.TXT.gpg' -> 'lab.v2'. Only known
    suffixes are stripped (case-insensitive), so dots inside the name survive.
    """
    stem = source_name
    while True:
        head, dot, suffix = stem.rpartition(".")
        if not dot or not head or suffix.lower() not in _SOURCE_SUFFIXES:
            return stem
        stem = head


def render_remote_name(
    template: str,
    *,
    target: str,
    tenant: str,
    feed: str,
    source_name: str,
    file_id: str,
    ext: str,
) -> str:
    """The remote file name for one source file; TargetError if it is not one safe name.

    The same inputs always give the same name: that is what makes a rerun replace (or
    keep) the extract of its source file instead of adding a second one.
    """
    uses_stem = any(field == "source_stem" for _, field, _, _ in string.Formatter().parse(template))
    if uses_stem and not source_name:
        raise TargetError(
            f"target {target}: file_name uses {{source_stem}} but the load request names "
            "no source file"
        )
    values: Mapping[str, str] = {
        "tenant": tenant,
        "feed": feed,
        "source_stem": source_stem(source_name),
        "file_id": file_id,
        "ext": ext,
    }
    name = template.format_map(values)
    problem = remote_name_problem(name)
    if problem is None and name.startswith("."):
        problem = "starts with '.' (reserved for files being written)"
    if problem is None and remote_name_problem(part_name(name, "x")) is not None:
        problem = "leaves no room for the temporary name's suffix"
    if problem is not None:
        raise TargetError(f"target {target}: remote name {display_name(name)} {problem}")
    return name


def _token(load_id: str) -> str:
    """A short, name-safe stand-in for a load id (load ids are not ours to trust in names)."""
    return hashlib.sha256(load_id.encode("utf-8")).hexdigest()[:_TOKEN_CHARS]


def part_name(name: str, load_id: str) -> str:
    """The temporary name `name` is uploaded under: hidden, per load, ends in '.part'."""
    return f".{name}.{_token(load_id)}.part"


def aside_name(name: str, load_id: str) -> str:
    """Where the previous file is moved while a server without posix-rename replaces it."""
    return f".{name}.{_token(load_id)}.old"


def sidecar_name(name: str) -> str:
    """The checksum file that travels with an encrypted extract."""
    return name + SIDECAR_SUFFIX


def is_leftover(entry: str, name: str) -> bool:
    """Whether `entry` is a temporary file this target made for `name` (any load)."""
    hexes = f"[0-9a-f]{{{_TOKEN_CHARS}}}"
    for base in (name, sidecar_name(name)):
        if re.fullmatch(rf"\.{re.escape(base)}\.{hexes}\.(?:part|old)", entry):
            return True
    return False


@dataclass(frozen=True)
class Sidecar:
    """The `<name>.sha256` file: sha256sum lines for the plaintext extract and the delivered file.

    `sha256sum -c --ignore-missing <name>.sha256` checks the transfer on the partner's side
    and, once they decrypted `<plaintext name>`, the plaintext too.
    """

    plaintext_sha256: str
    plaintext_name: str
    delivered_sha256: str
    delivered_name: str

    def render(self) -> bytes:
        """Two lines in `sha256sum` format."""
        return (
            f"{self.plaintext_sha256}  {self.plaintext_name}\n"
            f"{self.delivered_sha256}  {self.delivered_name}\n"
        ).encode()

    @classmethod
    def parse(cls, data: bytes) -> Sidecar | None:
        """Read a sidecar we wrote; None for anything else (then the extract is rewritten)."""
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            return None
        entries = [re.fullmatch(r"([0-9a-f]{64})  (\S.*)", line) for line in lines]
        if len(entries) != 2:
            return None
        first, second = entries
        if first is None or second is None:
            return None
        return cls(first.group(1), first.group(2), second.group(1), second.group(2))


Outcome = Literal["inserted", "updated", "unchanged"]


@dataclass(frozen=True)
class DeliveryCounts:
    """Row counts for one delivered (or kept) extract."""

    inserted: int
    updated: int
    unchanged: int
    confirmed: int


def delivery_counts(outcome: Outcome, rows: int) -> DeliveryCounts:
    """A file is one unit: every row of it was inserted, updated or left unchanged together.

    A new remote file -> inserted; a different file replaced -> updated; an identical file
    kept -> unchanged. Every row is confirmed: this is called only once the remote file's
    size (new) or digest (kept) was verified.
    """
    return DeliveryCounts(
        inserted=rows if outcome == "inserted" else 0,
        updated=rows if outcome == "updated" else 0,
        unchanged=rows if outcome == "unchanged" else 0,
        confirmed=rows,
    )
