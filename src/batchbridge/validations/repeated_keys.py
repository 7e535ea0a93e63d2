"""What finding every copy of a repeated key takes: the file's raw tail, a narrow second read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from batchbridge.config import FormatConfig
from batchbridge.validations.base import ROW_COLUMN
from batchbridge.validations.readers.delimited import BodyAt, parse_body
from batchbridge.validations.readers.delimited_stream import BodyParser
from batchbridge.validations.spill import EncryptedSpill
from batchbridge.validations.transformed_rows import compacted


class RawTail:
    """A file's raw rows from the first chunk that repeated an earlier chunk's key on.

    The earlier copies of a repeated key are found among them, so the second read of
    the file stops where they start. Kept in an encrypted spill next to the transformed
    rows' (`path`), or in memory without one; removed on leaving the `with` block.
    """

    def __init__(self, path: Path | None) -> None:
        self.first_row: int | None = None
        self._path = path
        self._spill: EncryptedSpill | None = None
        self._frames: list[pl.DataFrame] = []

    def keep(self, raw: pl.DataFrame) -> None:
        if not raw.height:
            return
        if self.first_row is None:
            self.first_row = int(raw.get_column(ROW_COLUMN).min())  # type: ignore[arg-type]
        if self._path is None:
            self._frames.append(compacted(raw))
            return
        if self._spill is None:
            self._spill = EncryptedSpill(self._path)
        self._spill.append(raw)

    def frames(self) -> Iterator[pl.DataFrame]:
        return self._spill.frames() if self._spill is not None else iter(self._frames)

    def __enter__(self) -> RawTail:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._spill is not None:
            self._spill.close()
        self._frames.clear()


def rows_with_keys(fmt: FormatConfig, key: str, keys: set[str]) -> BodyParser:
    """A parser for the second read: the key column first, whole records only where it matches.

    The file was read strictly once already (same bytes, same signature), so the cheap
    one-column read finds the chunks worth parsing whole.
    """
    quoting = fmt.quoting == "rfc4180"
    delimiter = fmt.delimiter.encode("utf-8")

    def parse(body: bytes, names: list[str], at: BodyAt) -> tuple[pl.DataFrame, int]:
        found = pl.read_csv(
            body, has_header=False, columns=[names.index(key)], infer_schema=False,
            separator=fmt.delimiter, quote_char='"' if quoting else None,
            raise_if_empty=False, comment_prefix=None, null_values=None,
        )  # fmt: skip
        records = found.height
        if not found.to_series().str.strip_chars().is_in(keys).any():
            return pl.DataFrame(
                schema={**dict.fromkeys(names, pl.String), ROW_COLUMN: pl.UInt32}
            ), records
        return parse_body(body, names, fmt, quoting, delimiter, at), records

    return parse
