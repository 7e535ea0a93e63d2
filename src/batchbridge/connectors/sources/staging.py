"""Private staging for fetched files: a 0700 folder, 0600 files, written under a temp name."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from types import TracebackType

from batchbridge.connectors.sources.base import FetchedFile, RemoteFile
from batchbridge.connectors.sources.names import check_remote_name
from batchbridge.errors import BatchbridgeError, IncompleteDownloadError

STAGING_REASON = "staging_failed"


def prepare_staging_dir(staging_dir: Path) -> Path:
    """Create `staging_dir` (and parents) and make it 0700 even when it already existed."""
    try:
        staging_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(staging_dir, 0o700)
    except OSError as exc:
        raise BatchbridgeError(
            f"cannot prepare staging folder {staging_dir} ({exc.strerror})", reason=STAGING_REASON
        ) from None
    return staging_dir


class StagedFile:
    """A 0600 temp file in staging that hashes what is written; `commit` renames it in place.

    Used as a context manager: leaving without `commit` (an error) deletes the partial file.
    Local write failures raise BatchbridgeError(reason='staging_failed'), never OSError, so
    a connector can tell them apart from the server's errors.
    """

    def __init__(self, staging_dir: Path, remote: RemoteFile) -> None:
        check_remote_name(remote.name)
        self.remote = remote
        self.final_path = staging_dir / remote.name
        self.temp_path = staging_dir / f".batchbridge-{secrets.token_hex(8)}.part"
        self.size = 0
        self._hash = hashlib.sha256()
        self._fd: int | None = None

    def __enter__(self) -> StagedFile:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            self._fd = os.open(self.temp_path, flags, 0o600)
            os.fchmod(self._fd, 0o600)
        except OSError as exc:
            raise self._error("create", exc) from None
        return self

    def write(self, data: bytes) -> int:
        """Append `data` to the temp file and the running sha256."""
        assert self._fd is not None, "StagedFile used outside its context"
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            raise self._error("write", exc) from None
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def commit(self) -> FetchedFile:
        """Check the size against the listing, fsync, and rename to the remote's name."""
        if self.size < self.remote.size:
            raise IncompleteDownloadError(
                f"{self.remote.name}: got {self.size} of the {self.remote.size} bytes the "
                "server listed (truncated, or the transfer was cut); partial download deleted"
            )
        if self.size > self.remote.size:
            raise IncompleteDownloadError(
                f"{self.remote.name}: larger than the {self.remote.size} bytes the server "
                "listed (changed since listing); partial download deleted"
            )
        assert self._fd is not None, "StagedFile used outside its context"
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.replace(self.temp_path, self.final_path)
        except OSError as exc:
            raise self._error("finish", exc) from None
        return FetchedFile(
            name=self.remote.name,
            local_path=self.final_path,
            size=self.size,
            sha256=self._hash.hexdigest(),
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.temp_path.exists():
            self.temp_path.unlink()

    def _error(self, action: str, exc: OSError) -> BatchbridgeError:
        return BatchbridgeError(
            f"cannot {action} staging file for {self.remote.name} in "
            f"{self.final_path.parent} ({exc.strerror})",
            reason=STAGING_REASON,
        )
