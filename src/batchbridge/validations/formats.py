"""Explicit registry of plaintext formats: a feed's `format.kind` names its reader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchbridge.config import AnyFormatConfig
from batchbridge.errors import ConfigError
from batchbridge.validations.base import ParsedFile
from batchbridge.validations.readers.delimited import read_delimited
from batchbridge.validations.readers.hl7v2 import read_hl7v2

FormatReader = Callable[[bytes, Any, tuple[str, ...]], ParsedFile]

FORMAT_READERS: dict[str, FormatReader] = {
    "delimited": read_delimited,
    "hl7v2": read_hl7v2,
}
"""Format kind -> reader(plaintext, format config, schema columns) -> every record as strings."""


def read_plaintext(data: bytes, fmt: AnyFormatConfig, columns: tuple[str, ...]) -> ParsedFile:
    """Parse a decrypted file with the reader its format names; a broken file fails whole."""
    reader = FORMAT_READERS.get(fmt.kind)
    if reader is None:
        valid = ", ".join(sorted(FORMAT_READERS))
        raise ConfigError(f"unknown format kind {fmt.kind!r} ({valid})")
    return reader(data, fmt, columns)
