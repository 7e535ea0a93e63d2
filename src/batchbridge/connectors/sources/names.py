"""Refuse remote file names that could escape staging or corrupt logs (traversal, controls)."""

from __future__ import annotations

import unicodedata

from batchbridge.errors import UnsafeRemoteNameError

MAX_NAME_BYTES = 255
_SHOWN_CHARS = 64
# Bidirectional overrides/isolates can make a name read differently from what it is.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def display_name(name: str) -> str:
    """`name` made safe to print: repr()-escaped and truncated, with its length when cut."""
    if len(name) <= _SHOWN_CHARS:
        return repr(name)
    return f"{name[:_SHOWN_CHARS]!r}… ({len(name)} chars)"


def remote_name_problem(name: str) -> str | None:
    """Why `name` is not a safe plain file name, or None when it is."""
    if name == "":
        return "is empty"
    if name in (".", ".."):
        return "is a relative directory reference"
    if name.startswith("/"):
        return "is an absolute path"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    for char in name:
        code = ord(char)
        if code == 0:
            return "contains a NUL byte"
        if code < 0x20 or code == 0x7F or 0x80 <= code <= 0x9F:
            return "contains a control character"
        if 0xD800 <= code <= 0xDFFF:
            return "is not valid UTF-8"
        if char in _BIDI_CONTROLS:
            return "contains a bidirectional control character"
        category = unicodedata.category(char)
        if category == "Cf":
            # Zero-width spaces and joiners, soft hyphens, BOMs, invisible tag characters:
            # two names that print alike must not be two different files.
            return "contains an invisible formatting character"
        if category in ("Zl", "Zp"):
            return "contains a line or paragraph separator"
        if category == "Zs" and char != " ":
            return "contains a space character other than U+0020"
    if name.startswith("-"):
        return "starts with '-'"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_remote_name(name: str) -> None:
    """Raise UnsafeRemoteNameError unless `name` is a plain, printable, single-component name."""
    problem = remote_name_problem(name)
    if problem is not None:
        raise UnsafeRemoteNameError(f"unsafe remote name {display_name(name)}: {problem}")
