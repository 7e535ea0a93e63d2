"""The Source protocol: list a partner's ready files and fetch one into staging."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class RemoteFile:
    """A file on the partner's server that is ready to fetch (stable, safe name)."""

    name: str
    size: int
    mtime: int


@dataclass(frozen=True)
class FetchedFile:
    """A remote file copied into staging, with its verified size and sha256."""

    name: str
    local_path: Path
    size: int
    sha256: str


class Source(Protocol):
    """A partner drop location. Implementations refuse unsafe names and links."""

    def list_ready(self) -> list[RemoteFile]:
        """Files matching the feed glob whose size held across two listings and are old enough.

        Sorted by name. Entries that are links or have unsafe names are skipped with a
        warning naming the problem (not raised: one bad entry must not block the rest).
        """
        ...

    def fetch(self, remote: RemoteFile, staging_dir: Path) -> FetchedFile:
        """Download `remote` into `staging_dir` (0700), verify its size, hash it."""
        ...

    def mark_processed(self, remote: RemoteFile) -> None:
        """Move the remote file to the processed folder, when one is configured."""
        ...

    def read_marker(self, name: str, max_bytes: int) -> bytes | None:
        """A small regular file beside the inbox files ('.done', manifest), or None if absent.

        Refuses unsafe names, links and files larger than `max_bytes`.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...
