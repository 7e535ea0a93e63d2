"""Values of the hl7v2 reader: delimiters, escape sequences, date-times over whole columns.

Part of the hl7v2 reader (its module docstring says how each value is read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import polars as pl

STANDARD = "|^~\\&"
"""The usual MSH-1 + MSH-2 (field, component, repetition, escape, subcomponent)."""
DELIMITERS_COLUMN = "delims"
"""Column holding each segment's message's MSH-1 + the first four characters of MSH-2."""

# Anchored with \A … \z: Polars' regex searches, and `$` would not do what Python's
# fullmatch does. [0-9] is ASCII-only there as it is in Python's `re`.
_HL7_DATETIME = (
    r"\A(?P<year>[0-9]{4})(?P<month>[0-9]{2})(?P<day>[0-9]{2})"
    r"(?:(?P<hour>[0-9]{2})(?P<minute>[0-9]{2})"
    r"(?:(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?)?)?"
    r"(?P<zone>[+-][0-9]{4})?\z"
)


@dataclass(frozen=True)
class Delimiters:
    """A message's encoding characters (MSH-1, MSH-2) and the file's character set."""

    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str
    charset: str

    @property
    def standard_split(self) -> bool:
        """Whether the field, component and repetition characters are '|', '^' and '~'."""
        return self.field + self.component + self.repetition == STANDARD[:3]


@lru_cache(maxsize=256)
def delimiters(chars: str, charset: str) -> Delimiters:
    """The Delimiters of MSH-1 + MSH-2 `chars` (five characters, checked by the envelope)."""
    return Delimiters(chars[0], chars[1], chars[2], chars[3], chars[4], charset)


# -- a message's own delimiters -------------------------------------------------------------
# Fields are split for all segments at once with the literal '|', '^' and '~'. A message
# that declares other characters is rewritten first with a permutation of characters: its
# field, component and repetition characters become '|', '^' and '~', and any of those it
# holds as data take the place its own characters left free. Nothing collides, and the
# inverse gives every piece back exactly as it was written.


@lru_cache(maxsize=256)
def swap_tables(chars: str) -> tuple[dict[int, int], dict[int, int]]:
    """(to standard, back from standard) translate tables for MSH-1 + MSH-2 `chars`."""
    own = chars[:3]
    standard = STANDARD[:3]
    mapping = dict(zip(own, standard, strict=True))
    displaced = [ch for ch in standard if ch not in own]
    freed = [ch for ch in own if ch not in standard]
    mapping.update(zip(displaced, freed, strict=True))
    forward = {ord(a): ord(b) for a, b in mapping.items() if a != b}
    return forward, {b: a for a, b in forward.items()}


def to_standard(texts: pl.Series, chars: pl.Series) -> pl.Series:
    """`texts` with each message's own delimiters swapped for the standard ones."""
    mask = chars.str.slice(0, 3) != STANDARD[:3]
    if not mask.any():
        return texts
    # Only the rare messages with their own delimiters come to Python.
    rows = mask.arg_true()
    swapped = [
        text.translate(swap_tables(own)[0])
        for text, own in zip(texts.gather(rows), chars.gather(rows), strict=True)
    ]
    return texts.clone().scatter(rows, swapped)


# -- escape sequences -----------------------------------------------------------------------


def unescape(text: str, d: Delimiters) -> str:
    """`text` with HL7 escape sequences decoded (see the hl7v2 module docstring)."""
    escape = d.escape
    if escape not in text:
        return text
    out: list[str] = []
    position = 0
    while True:
        start = text.find(escape, position)
        end = text.find(escape, start + 1) if start >= 0 else -1
        if end < 0:
            out.append(text[position:])
            return "".join(out)
        out.append(text[position:start])
        sequence = text[start + 1 : end]
        decoded = _decode_sequence(sequence, d)
        out.append(text[start : end + 1] if decoded is None else decoded)
        position = end + 1


def _decode_sequence(sequence: str, d: Delimiters) -> str | None:
    simple = {
        "F": d.field,
        "S": d.component,
        "T": d.subcomponent,
        "R": d.repetition,
        "E": d.escape,
        "H": "",
        "N": "",
        ".br": "\n",
    }
    if sequence in simple:
        return simple[sequence]
    if sequence.startswith("X") and len(sequence) > 1:
        digits = sequence[1:]
        if len(digits) % 2 or not all(ch in "0123456789ABCDEFabcdef" for ch in digits):
            return None
        try:
            return bytes.fromhex(digits).decode(d.charset)
        except UnicodeDecodeError:
            return None
    return None


def unescape_columns(frame: pl.DataFrame, columns: Sequence[str], charset: str) -> pl.DataFrame:
    """`frame` with `columns` (raw pieces of values, never null) decoded: escape sequences,
    and the swap back of a message's own delimiters (`to_standard`).

    Most values hold none of the characters that decoding changes: one vectorised test per
    column picks those that do, and only those go through Python.
    """
    chars = frame.get_column(DELIMITERS_COLUMN)
    special = _special_characters(chars)
    decoded: list[pl.Series] = []
    for column in columns:
        values = frame.get_column(column)
        rows = values.str.contains_any(special).arg_true()
        if rows.is_empty():
            continue
        new = [
            _decode(value, own, charset)
            for value, own in zip(values.gather(rows), chars.gather(rows), strict=True)
        ]
        decoded.append(values.clone().scatter(rows, new))
    return frame.with_columns(decoded) if decoded else frame


def _special_characters(chars: pl.Series) -> list[str]:
    """The characters a value must hold to change when decoded, for any message of the
    file: its escape character as it reads after `to_standard`, and every character the
    swap moved. A value of one message may be sent for another's: that costs a call only."""
    special = {STANDARD[3]}
    for own in chars.unique().to_list():
        forward, back = swap_tables(own)
        escape = ord(own[3])
        special.add(chr(forward.get(escape, escape)))
        special.update(map(chr, back))
    return sorted(special)


def _decode(value: str, chars: str, charset: str) -> str:
    d = delimiters(chars, charset)
    if not d.standard_split:
        value = value.translate(swap_tables(chars)[1])
    return unescape(value, d)


# -- date-times -----------------------------------------------------------------------------


def iso_date(value: pl.Expr) -> pl.Expr:
    """'YYYYMMDD[HHMM…]' -> 'YYYY-MM-DD'; anything else unchanged."""
    # One regex pass: the pieces are read from the struct it gives, not matched again.
    iso = (
        value.str.extract_groups(_HL7_DATETIME)
        .struct.with_fields(
            iso=pl.concat_str(pl.field("year"), pl.field("month"), pl.field("day"), separator="-")
        )
        .struct.field("iso")
    )
    return pl.coalesce(iso, value)  # null (no match) -> the value as written


def iso_datetime(value: pl.Expr) -> pl.Expr:
    """'YYYYMMDDHHMM[SS[.S…]][±ZZZZ]' -> ISO 8601; anything else (no minutes…) unchanged."""
    part, zone = pl.field, pl.field("zone")
    # Null unless the value matched with minutes; each optional part is null when absent,
    # and ignore_nulls leaves it out.
    required = pl.concat_str(
        part("year"), pl.lit("-"), part("month"), pl.lit("-"), part("day"), pl.lit("T"),
        part("hour"), pl.lit(":"), part("minute"),
    )  # fmt: skip
    optional = [
        pl.concat_str(pl.lit(":"), part("second")),
        pl.concat_str(pl.lit("."), part("fraction")),
        pl.when(zone == "+0000")
        .then(pl.lit("Z"))
        .otherwise(pl.concat_str(zone.str.slice(0, 3), pl.lit(":"), zone.str.slice(3))),
    ]
    iso = (
        value.str.extract_groups(_HL7_DATETIME)
        .struct.with_fields(
            iso=pl.when(required.is_not_null()).then(
                pl.concat_str([required, *optional], ignore_nulls=True)
            )
        )
        .struct.field("iso")
    )
    return pl.coalesce(iso, value)
