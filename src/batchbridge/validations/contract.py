"""File contracts: what a partner's file must be before any of it is processed.

Each check raises ContractViolationError naming the clause and the expected value
(file names, sizes and times are not patient data; file contents are never quoted).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from typing import Protocol
from zoneinfo import ZoneInfo

from batchbridge.config import ContractWindow, FileContractConfig
from batchbridge.errors import ContractViolationError

MANIFEST_SUFFIX = ".manifest"
DONE_SUFFIX = ".done"
MARKER_MAX_BYTES = 64 * 1024
"""A marker or manifest is a few lines; anything bigger is refused unread."""
_SHA256_LINE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(.+)$")


class ListedFile(Protocol):
    """What a source's listing says of a file (connectors.sources.base.RemoteFile is one)."""

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def mtime(self) -> int: ...


def marker_name(contract: FileContractConfig, name: str) -> str | None:
    """The sibling file the contract waits for ('<name>.done' / '.manifest'), if any."""
    if contract.marker == "done":
        return name + DONE_SUFFIX
    if contract.marker == "manifest":
        return name + MANIFEST_SUFFIX
    return None


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def in_window(window: ContractWindow, moment: datetime, timezone: str) -> bool:
    """Whether `moment` falls in the daily local window (end before start wraps midnight)."""
    local = moment.astimezone(ZoneInfo(timezone)).time().replace(tzinfo=None)
    start, end = _clock(window.start), _clock(window.end)
    if start <= end:
        return start <= local <= end
    return local >= start or local <= end


def check_listing(contract: FileContractConfig, remote: ListedFile, *, timezone: str) -> None:
    """Name, size and arrival-time clauses, from the listing alone (before download)."""
    if contract.name_pattern is not None and not re.fullmatch(contract.name_pattern, remote.name):
        raise ContractViolationError(
            f"file name does not match the contract pattern {contract.name_pattern!r}"
        )
    if contract.min_bytes is not None and remote.size < contract.min_bytes:
        raise ContractViolationError(
            f"file is {remote.size} bytes, below the contract minimum {contract.min_bytes}"
        )
    if contract.max_bytes is not None and remote.size > contract.max_bytes:
        raise ContractViolationError(
            f"file is {remote.size} bytes, above the contract maximum {contract.max_bytes}"
        )
    window = contract.arrival_window
    if window is not None:
        arrived = datetime.fromtimestamp(remote.mtime, tz=UTC)
        if not in_window(window, arrived, timezone):
            local = arrived.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")
            raise ContractViolationError(
                f"file arrived at {local} ({timezone}), outside the contract window "
                f"{window.start}-{window.end}"
            )


def check_manifest(manifest: bytes, *, name: str, sha256: str) -> None:
    """The manifest (sha256sum format) must list `name` with the downloaded bytes' sha256."""
    try:
        text = manifest.decode("utf-8")
    except UnicodeDecodeError:
        raise ContractViolationError(f"{name}{MANIFEST_SUFFIX} is not UTF-8 text") from None
    listed: str | None = None
    for line in text.splitlines():
        match = _SHA256_LINE.match(line.strip())
        if match and match.group(2).strip() == name:
            listed = match.group(1).lower()
    if listed is None:
        raise ContractViolationError(
            f"{name}{MANIFEST_SUFFIX} has no sha256 line for {name} (sha256sum format)"
        )
    if listed != sha256:
        raise ContractViolationError(
            f"sha256 of the downloaded file differs from {name}{MANIFEST_SUFFIX}: "
            "incomplete or replaced upload"
        )


def check_declared_count(contract: FileContractConfig, declared: int | None) -> None:
    """When the contract requires it, the file must have declared its row count."""
    if contract.require_row_count and declared is None:
        raise ContractViolationError(
            "the contract requires a row count (header record or trailer) and the file has none"
        )
