"""What the CLI prints besides reports: JSON, one-line errors, notes on stderr."""

from __future__ import annotations

import json
import sys

from batchbridge.errors import BatchbridgeError


def print_json(data: object) -> None:
    """Stable JSON on stdout (sorted keys, ISO dates)."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def error_line(exc: BatchbridgeError) -> str:
    """The one line an error prints: its stable reason code and its message's first line.

    Messages are written for this line (ids, counts, names; never values); the rest of a
    multi-line message (a subprocess's output tail) follows indented.
    """
    first, _, rest = str(exc).partition("\n")
    line = f"error [{exc.reason}]: {first}"
    if rest.strip():
        line += "\n" + "\n".join(f"  {part}" for part in rest.splitlines())
    return line


def print_error(exc: BatchbridgeError) -> None:
    """The error's line on stderr."""
    print(error_line(exc), file=sys.stderr)


def note(message: str) -> None:
    """A remark for the person at the terminal (stderr, so stdout stays data)."""
    print(message, file=sys.stderr)


def wants_progress(*, quiet: bool, as_json: bool) -> bool:
    """Draw progress only for a person at a terminal."""
    return not quiet and not as_json and sys.stderr.isatty()
