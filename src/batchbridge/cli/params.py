"""Options shared by several commands, and list/id parsing the same everywhere."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

ConfigDirOption = Annotated[
    Path | None,
    typer.Option(
        "--config-dir",
        help="Folder of feed YAMLs (default: $BATCHBRIDGE_CONFIG_DIR, else deployments/feeds).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print nothing on success (for cron); errors still go to stderr."
    ),
]
FeedArgument = Annotated[str, typer.Argument(help="Feed name (its YAML's file name).")]
WhyOption = Annotated[
    str | None,
    typer.Option("--why", help="Why you do this: a ticket number, not patient details (audited)."),
]


def split_values(values: Iterable[str] | None) -> list[str]:
    """Values given repeated (`--file a --file b`) or comma-separated (`--file a,b`)."""
    found: list[str] = []
    for value in values or ():
        found += [part.strip() for part in value.split(",") if part.strip()]
    return found


def parse_ids(values: Iterable[str] | None, *, what: str = "row id") -> list[int]:
    """Positive integer ids, repeated or comma-separated; a bad one is a usage error."""
    ids: list[int] = []
    for part in split_values(values):
        if not part.isdigit() or int(part) < 1:
            # The value is not echoed: a mistyped id may be pasted patient data.
            raise typer.BadParameter(f"every {what} must be a positive whole number")
        ids.append(int(part))
    return ids
