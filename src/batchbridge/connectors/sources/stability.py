"""Pure functions turning directory listings into ready files: glob, safe names, stability."""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from batchbridge.connectors.sources.base import RemoteFile
from batchbridge.connectors.sources.names import display_name, remote_name_problem


@dataclass(frozen=True)
class ListingEntry:
    """One directory entry as listed, without following links (lstat semantics)."""

    name: str
    mode: int | None
    size: int | None
    mtime: int | None


@dataclass(frozen=True)
class SkippedEntry:
    """An entry matching the glob that is refused, and why (no file contents)."""

    name: str
    reason: str


@dataclass(frozen=True)
class Listing:
    """Candidate files of one listing, and the glob matches that were refused."""

    candidates: list[RemoteFile]
    skipped: list[SkippedEntry]


def entry_problem(entry: ListingEntry) -> str | None:
    """Why a listed entry cannot be fetched (unsafe name, link, not a file), or None."""
    problem = remote_name_problem(entry.name)
    if problem is not None:
        return f"name {problem}"
    if entry.mode is None:
        return "server did not report its file type"
    if stat.S_ISLNK(entry.mode):
        return "is a symbolic link"
    if not stat.S_ISREG(entry.mode):
        return "is not a regular file"
    if entry.size is None or entry.mtime is None:
        return "server did not report its size and modification time"
    return None


def scan_listing(entries: Iterable[ListingEntry], glob: str) -> Listing:
    """Keep regular files with safe names matching `glob` (case-sensitive); note refusals."""
    candidates: list[RemoteFile] = []
    skipped: list[SkippedEntry] = []
    for entry in entries:
        if not fnmatchcase(entry.name, glob):
            continue
        problem = entry_problem(entry)
        if problem is not None:
            skipped.append(SkippedEntry(entry.name, problem))
            continue
        assert entry.size is not None and entry.mtime is not None  # checked above
        candidates.append(RemoteFile(name=entry.name, size=entry.size, mtime=entry.mtime))
    candidates.sort(key=lambda remote: remote.name)
    return Listing(candidates=candidates, skipped=skipped)


def log_skipped(logger: logging.Logger, skipped: Iterable[SkippedEntry], where: str) -> None:
    """Warn once per refused entry, printing its name escaped and truncated."""
    for entry in skipped:
        logger.warning("skipping entry %s in %s: %s", display_name(entry.name), where, entry.reason)


def stable_entries(
    first: Sequence[RemoteFile],
    second: Sequence[RemoteFile],
    *,
    now: float,
    min_age_seconds: float,
) -> list[RemoteFile]:
    """Files of `second` whose size and mtime equal those in `first` and are old enough.

    Age is `now - mtime`; with `min_age_seconds == 0` no age is required (a server
    clock slightly ahead of ours must not hide files forever). Sorted by name.
    """
    before = {remote.name: (remote.size, remote.mtime) for remote in first}
    ready = [
        remote
        for remote in second
        if before.get(remote.name) == (remote.size, remote.mtime)
        and (min_age_seconds <= 0 or now - remote.mtime >= min_age_seconds)
    ]
    return sorted(ready, key=lambda remote: remote.name)


def list_stable_files(
    scan: Callable[[], Listing],
    *,
    where: str,
    stable_seconds: float,
    min_age_seconds: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    log: logging.Logger,
) -> list[RemoteFile]:
    """List twice, `stable_seconds` apart; keep the files that did not change, old enough.

    A file still being written changes size or mtime between the listings and waits for
    the next run. Refused entries of the first listing are logged once each.
    """
    first = scan()
    log_skipped(log, first.skipped, where)
    if not first.candidates:
        log.info("0 files ready in %s", where)
        return []
    if stable_seconds > 0:
        sleep(stable_seconds)
    second = scan()
    ready = stable_entries(
        first.candidates, second.candidates, now=clock(), min_age_seconds=min_age_seconds
    )
    log.info(
        "%d files ready in %s (%d matching, %d refused)",
        len(ready),
        where,
        len(second.candidates),
        len(first.skipped),
    )
    return ready
