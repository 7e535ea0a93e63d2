"""SftpSource: a partner's SFTP drop, with pinned host keys, key auth and bounded retries."""

from __future__ import annotations

import logging
import posixpath
import socket
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import paramiko.sftp as sftp_codes

from batchbridge import progress
from batchbridge.config import SftpSourceConfig
from batchbridge.connectors.sources.base import FetchedFile, RemoteFile
from batchbridge.connectors.sources.names import check_remote_name
from batchbridge.connectors.sources.stability import (
    Listing,
    ListingEntry,
    entry_problem,
    list_stable_files,
    scan_listing,
)
from batchbridge.connectors.sources.staging import StagedFile, prepare_staging_dir
from batchbridge.connectors.ssh.connect import (
    ExtendedSftpClient,
    SshFailure,
    brief,
    read_pipelined,
)
from batchbridge.connectors.ssh.host_keys import parse_host_keys
from batchbridge.connectors.ssh.session import OverSshSession, SshSession
from batchbridge.crashpoints import crash_point
from batchbridge.errors import (
    BatchbridgeError,
    HostKeyError,
    IncompleteDownloadError,
    SourceError,
    TransientSourceError,
    UnsafeRemoteNameError,
)

logger = logging.getLogger(__name__)

# paramiko logs a refused key exchange as an ERROR traceback from its thread; a host key
# probe raises that refusal as our own error, so its transport logs to a quiet channel.
_PROBE_LOG_CHANNEL = "batchbridge.sftp.host_key_probe"
logging.getLogger(_PROBE_LOG_CHANNEL).setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class SftpProbe:
    """What `SftpSource.probe()` learned: whether we logged in, and counts from one listing.

    `error` is the first failure (None when both steps passed); no file name or content.
    """

    authenticated: bool
    matching: int | None = None
    refused: int | None = None
    error: BatchbridgeError | None = None


class SftpSource(OverSshSession):
    """The Source protocol over SFTP (paramiko). Connects lazily; use `close()` or `with`.

    Only the pinned host keys are accepted, only the configured private key is offered (no
    agent, no ~/.ssh). Transient failures are retried `max_attempts` times with jittered
    exponential backoff, reconnecting in between; authentication and host key failures are
    not retried. A relative `processed_dir` is relative to `remote_dir`. Calls are
    serialized by a lock, so one instance may be shared by threads.
    """

    def __init__(
        self,
        config: SftpSourceConfig,
        *,
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        backoff_seconds: float = 1.0,
    ) -> None:
        self.config = config
        self._session = SshSession(
            config,
            pinned=parse_host_keys(config.host_keys),
            transient=TransientSourceError,
            map_error=_source_error,
            base_dir=base_dir,
            sleep=sleep,
            backoff_seconds=backoff_seconds,
            # Remembers the server's extensions: limits@openssh.com sets the read size.
            sftp_class=ExtendedSftpClient,
            log=logger,
        )
        self.where = self._session.where
        self._clock = clock
        self._sleep = sleep

    # -- Source protocol -------------------------------------------------------------

    def list_ready(self) -> list[RemoteFile]:
        """Matching regular files whose size and mtime held across two listings, old enough."""
        remote_dir = self.config.remote_dir
        return list_stable_files(
            lambda: self._session.run(f"list {remote_dir}", self._list_once),
            where=f"{self.where}:{remote_dir}",
            stable_seconds=self.config.stable_seconds,
            min_age_seconds=self.config.min_age_seconds,
            clock=self._clock,
            sleep=self._sleep,
            log=logger,
        )

    def fetch(self, remote: RemoteFile, staging_dir: Path) -> FetchedFile:
        """Download `remote` (pipelined) into `staging_dir` (0700) as 0600; verify size, hash."""
        check_remote_name(remote.name)
        staging = prepare_staging_dir(staging_dir)
        fetched = self._session.run(
            f"fetch {remote.name}", lambda sftp: self._fetch_once(sftp, remote, staging)
        )
        logger.info("fetched %s (%d bytes) from %s", remote.name, fetched.size, self.where)
        return fetched

    def read_marker(self, name: str, max_bytes: int) -> bytes | None:
        """A small regular file in the remote folder (a '.done' marker, a manifest), or None."""
        check_remote_name(name)

        def read(sftp: paramiko.SFTPClient) -> bytes | None:
            path = self._remote_path(name)
            try:
                info = sftp.lstat(path)
            except FileNotFoundError:
                return None
            if info.st_mode is None or not stat.S_ISREG(info.st_mode):
                raise UnsafeRemoteNameError(f"{name}: is not a regular file")
            if (info.st_size or 0) > max_bytes:
                raise SourceError(f"{name}: larger than {max_bytes} bytes; not a marker")
            with sftp.open(path, "rb") as handle:
                return bytes(handle.read(max_bytes + 1))[:max_bytes]

        return self._session.run(f"read marker {name}", read)

    def mark_processed(self, remote: RemoteFile) -> None:
        """Move the remote file into `processed_dir` (created if missing); idempotent."""
        if self.config.processed_dir is None:
            return
        check_remote_name(remote.name)
        self._session.run(f"move {remote.name}", lambda sftp: self._move_once(sftp, remote))

    def probe(self) -> SftpProbe:
        """Connect (pinned host key, key auth) and list `remote_dir` once; download nothing.

        Errors are returned rather than raised, together with whether authentication got
        through, so a health check can tell bad credentials from a missing folder.
        """
        try:
            self._session.run("connect", lambda sftp: None)
        except BatchbridgeError as exc:
            return SftpProbe(authenticated=False, error=exc)
        try:
            listing = self._session.run(f"list {self.config.remote_dir}", self._list_once)
        except BatchbridgeError as exc:
            return SftpProbe(authenticated=True, error=exc)
        return SftpProbe(
            authenticated=True, matching=len(listing.candidates), refused=len(listing.skipped)
        )

    # -- one attempt of each operation ----------------------------------------------

    def _list_once(self, sftp: paramiko.SFTPClient) -> Listing:
        entries = [
            ListingEntry(
                name=attrs.filename,
                mode=attrs.st_mode,
                size=attrs.st_size,
                mtime=None if attrs.st_mtime is None else int(attrs.st_mtime),
            )
            for attrs in listdir_attr(sftp, self.config.remote_dir)
        ]
        return scan_listing(entries, self.config.glob)

    def _fetch_once(
        self, sftp: paramiko.SFTPClient, remote: RemoteFile, staging: Path
    ) -> FetchedFile:
        path = self._remote_path(remote.name)
        attrs = sftp.lstat(path)
        mtime = None if attrs.st_mtime is None else int(attrs.st_mtime)
        problem = entry_problem(ListingEntry(remote.name, attrs.st_mode, attrs.st_size, mtime))
        if problem is not None:
            raise UnsafeRemoteNameError(f"{remote.name}: {problem} (changed since listing)")
        if attrs.st_size != remote.size:
            raise IncompleteDownloadError(
                f"{remote.name}: now {attrs.st_size} bytes on the server, listed as "
                f"{remote.size} (changed since listing); not downloaded"
            )
        with StagedFile(staging, remote) as staged, sftp.open(path, "rb") as handle:
            # Read at most one byte past the listed size: a file that grew is refused
            # without downloading all of it.
            for chunk in read_pipelined(sftp, handle, remote.size + 1):
                staged.write(chunk)
                progress.advance(len(chunk))
                crash_point("mid_download")
            return staged.commit()

    def _move_once(self, sftp: paramiko.SFTPClient, remote: RemoteFile) -> None:
        assert self.config.processed_dir is not None
        target_dir = posixpath.join(self.config.remote_dir, self.config.processed_dir)
        source = self._remote_path(remote.name)
        target = posixpath.join(target_dir, remote.name)
        self._ensure_dir(sftp, target_dir)
        try:
            try:
                sftp.posix_rename(source, target)
            except OSError as exc:
                if exc.errno is not None:
                    raise
                # Server without the posix-rename extension: plain rename.
                sftp.rename(source, target)
        except FileNotFoundError:
            if _exists(sftp, target):
                logger.info("%s was already moved to %s", remote.name, target_dir)
                return
            raise SourceError(
                f"{remote.name}: not in {self.config.remote_dir} nor in {target_dir} "
                f"on {self.where}",
                reason="remote_missing",
            ) from None
        logger.info("moved %s to %s on %s", remote.name, target_dir, self.where)

    def _ensure_dir(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            attrs = sftp.stat(path)
        except FileNotFoundError:
            try:
                sftp.mkdir(path)
            except OSError:
                attrs = sftp.stat(path)  # created concurrently, or a real error
            else:
                return
        if attrs.st_mode is None or not stat.S_ISDIR(attrs.st_mode):
            raise SourceError(f"processed_dir {path} on {self.where} is not a folder")

    def _remote_path(self, name: str) -> str:
        return posixpath.join(self.config.remote_dir, name)


def _source_error(exc: Exception, failure: SshFailure | None) -> BatchbridgeError | None:
    """A source's reading of a failure: SSH trouble is a SourceError of the matching kind."""
    if isinstance(exc, BatchbridgeError):
        return exc
    if failure is None:
        return None
    if failure.kind == "host_key":
        return HostKeyError(failure.message, reason=failure.reason)
    if failure.kind == "transient":
        return TransientSourceError(failure.message, reason=failure.reason)
    return SourceError(failure.message, reason=failure.reason)


def server_host_key(
    host: str,
    port: int,
    *,
    disabled_algorithms: Sequence[str] = (),
    timeout: float = 30.0,
) -> paramiko.PKey:
    """The host key a server proves it holds in an SSH key exchange; no authentication.

    Nothing is trusted and no credential is sent: the caller compares the key with the
    pinned ones, or shows its fingerprint to be confirmed out of band. The key exchange
    itself proves the server holds the matching private key. `disabled_algorithms` are
    host key algorithms not to negotiate (to ask for one key type of a server with several).
    """
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror:
        raise SourceError(f"cannot resolve host {host!r}", reason="host_unknown") from None
    except OSError as exc:
        raise TransientSourceError(
            f"cannot connect to {where} ({type(exc).__name__}: {brief(exc)})"
        ) from None
    transport = paramiko.Transport(sock, disabled_algorithms={"keys": list(disabled_algorithms)})
    transport.set_log_channel(_PROBE_LOG_CHANNEL)
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except paramiko.ssh_exception.IncompatiblePeer as exc:
        if "host key" in str(exc):
            raise HostKeyError(
                f"{where} offers no host key of the requested types", reason="host_key_type"
            ) from None
        raise SourceError(f"no common SSH algorithms with {where} ({brief(exc)})") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise TransientSourceError(
            f"SSH handshake with {where} failed ({type(exc).__name__}: {brief(exc)})"
        ) from None
    finally:
        transport.close()


def listdir_attr(sftp: paramiko.SFTPClient, path: str) -> list[paramiko.SFTPAttributes]:
    """`sftp.listdir_attr`, except a name that is not UTF-8 is kept (surrogate-escaped).

    paramiko decodes names strictly, so one such name would fail the whole listing; the
    fallback re-reads the folder through paramiko's request layer and lets the name check
    refuse that entry alone.
    """
    try:
        return sftp.listdir_attr(path)
    except UnicodeDecodeError:
        logger.debug("a name in %s is not valid UTF-8; listing it tolerantly", path)
    # The request layer and SFTPAttributes._from_msg are not in the type stubs.
    client: Any = sftp
    attributes: Any = paramiko.SFTPAttributes
    _, msg = client._request(sftp_codes.CMD_OPENDIR, client._adjust_cwd(path))
    handle = msg.get_binary()
    entries: list[paramiko.SFTPAttributes] = []
    try:
        while True:
            try:
                kind, msg = client._request(sftp_codes.CMD_READDIR, handle)
            except EOFError:
                break
            if kind != sftp_codes.CMD_NAME:
                raise paramiko.SFTPError("expected a name response")
            for _ in range(msg.get_int()):
                name = msg.get_string().decode("utf-8", "surrogateescape")
                longname = msg.get_string().decode("utf-8", "replace")
                attrs = attributes._from_msg(msg, name, longname)
                if name not in (".", ".."):
                    entries.append(attrs)
    finally:
        client._request(sftp_codes.CMD_CLOSE, handle)
    return entries


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.lstat(path)
    except FileNotFoundError:
        return False
    return True
