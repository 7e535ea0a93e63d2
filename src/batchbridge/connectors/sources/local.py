"""LocalDirSource: a local folder standing in for a partner's SFTP drop (tests, dry runs)."""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from batchbridge.config import LocalSourceConfig
from batchbridge.connectors.lifecycle import ClosedOnExit
from batchbridge.connectors.sources.base import FetchedFile, RemoteFile
from batchbridge.connectors.sources.names import check_remote_name
from batchbridge.connectors.sources.stability import (
    Listing,
    ListingEntry,
    list_stable_files,
    scan_listing,
)
from batchbridge.connectors.sources.staging import StagedFile, prepare_staging_dir
from batchbridge.errors import SourceError, UnsafeRemoteNameError

logger = logging.getLogger(__name__)
_CHUNK = 1024 * 1024


class LocalDirSource(ClosedOnExit):
    """The Source protocol over a local folder, with the same checks as the SFTP source.

    Relative `path` and `processed_dir` are resolved against `base_dir` (the feed YAML's
    folder). `clock` and `sleep` can be replaced to freeze time in tests.
    """

    def __init__(
        self,
        config: LocalSourceConfig,
        *,
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.path = _resolve(config.path, base_dir)
        self.processed_dir = (
            _resolve(config.processed_dir, base_dir) if config.processed_dir is not None else None
        )
        self._clock = clock
        self._sleep = sleep

    def list_ready(self) -> list[RemoteFile]:
        """Matching regular files whose size and mtime held across two listings, old enough."""
        return list_stable_files(
            self._scan,
            where=str(self.path),
            stable_seconds=self.config.stable_seconds,
            min_age_seconds=self.config.min_age_seconds,
            clock=self._clock,
            sleep=self._sleep,
            log=logger,
        )

    def fetch(self, remote: RemoteFile, staging_dir: Path) -> FetchedFile:
        """Copy `remote` into `staging_dir` (0700) as a 0600 file; refuse links; verify size."""
        check_remote_name(remote.name)
        staging = prepare_staging_dir(staging_dir)
        source_fd = self._open_regular(remote)
        try:
            with StagedFile(staging, remote) as staged:
                # Read at most one byte past the listed size: a growing file is refused
                # without copying all of it.
                remaining = remote.size + 1
                while remaining > 0:
                    chunk = _read(source_fd, min(_CHUNK, remaining), remote)
                    if not chunk:
                        break
                    staged.write(chunk)
                    remaining -= len(chunk)
                fetched = staged.commit()
        finally:
            os.close(source_fd)
        logger.info("fetched %s (%d bytes)", remote.name, fetched.size)
        return fetched

    def read_marker(self, name: str, max_bytes: int) -> bytes | None:
        """A small regular file in the folder (a '.done' marker, a manifest), or None."""
        check_remote_name(name)
        try:
            fd = self._open_regular(RemoteFile(name=name, size=0, mtime=0))
        except SourceError as exc:
            if exc.reason == "remote_missing":
                return None
            raise
        try:
            if os.fstat(fd).st_size > max_bytes:
                raise SourceError(f"{name}: larger than {max_bytes} bytes; not a marker")
            return os.read(fd, max_bytes)
        finally:
            os.close(fd)

    def mark_processed(self, remote: RemoteFile) -> None:
        """Move the file into `processed_dir`; nothing to do when it is already there."""
        if self.processed_dir is None:
            return
        check_remote_name(remote.name)
        source = self.path / remote.name
        target = self.processed_dir / remote.name
        self.processed_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(source, target)
        except FileNotFoundError:
            if target.is_file():
                logger.info("%s was already moved to %s", remote.name, self.processed_dir)
                return
            raise SourceError(
                f"{remote.name}: not in {self.path} nor in {self.processed_dir}",
                reason="remote_missing",
            ) from None
        logger.info("moved %s to %s", remote.name, self.processed_dir)

    def close(self) -> None:
        """Nothing to release for a local folder."""

    def _scan(self) -> Listing:
        try:
            with os.scandir(self.path) as entries:
                listed = [_listing_entry(entry) for entry in entries]
        except FileNotFoundError:
            raise SourceError(f"source folder {self.path} does not exist") from None
        except OSError as exc:
            raise SourceError(f"cannot list {self.path} ({exc.strerror})") from None
        return scan_listing(listed, self.config.glob)

    def _open_regular(self, remote: RemoteFile) -> int:
        path = self.path / remote.name
        # O_NONBLOCK: opening a FIFO put in place of the file would otherwise wait forever
        # for a writer; the fstat below then refuses it. Reads of a regular file ignore it.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise SourceError(
                f"{remote.name}: no longer in {self.path}", reason="remote_missing"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeRemoteNameError(f"{remote.name}: became a symbolic link") from None
            raise SourceError(f"{remote.name}: cannot open ({exc.strerror})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafeRemoteNameError(f"{remote.name}: is not a regular file")
        return fd


def _read(fd: int, size: int, remote: RemoteFile) -> bytes:
    try:
        return os.read(fd, size)
    except OSError as exc:
        raise SourceError(f"{remote.name}: cannot read ({exc.strerror})") from None


def _listing_entry(entry: os.DirEntry[str]) -> ListingEntry:
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return ListingEntry(name=entry.name, mode=None, size=None, mtime=None)
    return ListingEntry(
        name=entry.name, mode=info.st_mode, size=info.st_size, mtime=int(info.st_mtime)
    )


def _resolve(path: Path, base_dir: Path | None) -> Path:
    if path.is_absolute() or base_dir is None:
        return path
    return base_dir / path
