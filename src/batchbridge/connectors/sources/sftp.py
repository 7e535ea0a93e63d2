"""SftpSource: a partner's SFTP drop, with pinned host keys, key auth and bounded retries."""

from __future__ import annotations

import contextlib
import errno
import logging
import posixpath
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import paramiko
import paramiko.sftp as sftp_codes
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from batchbridge.config import SftpSourceConfig
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.sources.base import FetchedFile, RemoteFile
from batchbridge.connectors.sources.names import check_remote_name
from batchbridge.connectors.sources.ssh_keys import (
    PinnedHostKeyPolicy,
    describe_key,
    disabled_host_key_algorithms,
    load_private_key,
    parse_host_keys,
    verify_host_key,
)
from batchbridge.connectors.sources.stability import (
    Listing,
    ListingEntry,
    entry_problem,
    log_skipped,
    scan_listing,
    stable_entries,
)
from batchbridge.connectors.sources.staging import StagedFile, prepare_staging_dir
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
T = TypeVar("T")

# paramiko logs a refused key exchange as an ERROR traceback from its thread; a host key
# probe raises that refusal as our own error, so its transport logs to a quiet channel.
_PROBE_LOG_CHANNEL = "batchbridge.sftp.host_key_probe"
logging.getLogger(_PROBE_LOG_CHANNEL).setLevel(logging.CRITICAL)

# Same chunk size as paramiko's getfo(); prefetch keeps the pipe full either way.
_CHUNK = 32768
_MAX_BACKOFF_SECONDS = 30.0
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
    }
)
_TRANSIENT_TYPES = (
    EOFError,
    paramiko.SSHException,
    TimeoutError,
    ConnectionError,
    socket.gaierror,
    paramiko.ssh_exception.NoValidConnectionsError,
)


@dataclass(frozen=True)
class SftpProbe:
    """What `SftpSource.probe()` learned: whether we logged in, and counts from one listing.

    `error` is the first failure (None when both steps passed); no file name or content.
    """

    authenticated: bool
    matching: int | None = None
    refused: int | None = None
    error: BatchbridgeError | None = None


class SftpSource:
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
        self.where = f"{config.host}:{config.port}"
        self._base_dir = base_dir
        self._pinned = parse_host_keys(config.host_keys)
        self._disabled_algorithms = {"keys": disabled_host_key_algorithms(self._pinned)}
        self._clock = clock
        self._sleep = sleep
        self._backoff_seconds = backoff_seconds
        self._pkey: paramiko.PKey | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()

    # -- Source protocol -------------------------------------------------------------

    def list_ready(self) -> list[RemoteFile]:
        """Matching regular files whose size and mtime held across two listings, old enough."""
        remote_dir = self.config.remote_dir
        first = self._run(f"list {remote_dir}", self._list_once)
        log_skipped(logger, first.skipped, f"{self.where}:{remote_dir}")
        if not first.candidates:
            logger.info("0 files ready in %s:%s", self.where, remote_dir)
            return []
        if self.config.stable_seconds > 0:
            self._sleep(self.config.stable_seconds)
        second = self._run(f"list {remote_dir}", self._list_once)
        ready = stable_entries(
            first.candidates,
            second.candidates,
            now=self._clock(),
            min_age_seconds=self.config.min_age_seconds,
        )
        logger.info(
            "%d files ready in %s:%s (%d matching, %d refused)",
            len(ready),
            self.where,
            remote_dir,
            len(second.candidates),
            len(first.skipped),
        )
        return ready

    def fetch(self, remote: RemoteFile, staging_dir: Path) -> FetchedFile:
        """Download `remote` with prefetch into `staging_dir` (0700) as 0600; verify size, hash."""
        check_remote_name(remote.name)
        staging = prepare_staging_dir(staging_dir)
        fetched = self._run(
            f"fetch {remote.name}", lambda sftp: self._fetch_once(sftp, remote, staging)
        )
        logger.info("fetched %s (%d bytes) from %s", remote.name, fetched.size, self.where)
        return fetched

    def mark_processed(self, remote: RemoteFile) -> None:
        """Move the remote file into `processed_dir` (created if missing); idempotent."""
        if self.config.processed_dir is None:
            return
        check_remote_name(remote.name)
        self._run(f"move {remote.name}", lambda sftp: self._move_once(sftp, remote))

    def probe(self) -> SftpProbe:
        """Connect (pinned host key, key auth) and list `remote_dir` once; download nothing.

        Errors are returned rather than raised, together with whether authentication got
        through, so a health check can tell bad credentials from a missing folder.
        """
        try:
            self._run("connect", lambda sftp: None)
        except BatchbridgeError as exc:
            return SftpProbe(authenticated=False, error=exc)
        try:
            listing = self._run(f"list {self.config.remote_dir}", self._list_once)
        except BatchbridgeError as exc:
            return SftpProbe(authenticated=True, error=exc)
        return SftpProbe(
            authenticated=True, matching=len(listing.candidates), refused=len(listing.skipped)
        )

    def close(self) -> None:
        """Close the SFTP session and the SSH connection."""
        with self._lock:
            self._disconnect()

    def __enter__(self) -> SftpSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- one attempt of each operation ----------------------------------------------

    def _list_once(self, sftp: paramiko.SFTPClient) -> Listing:
        entries = [
            ListingEntry(
                name=attrs.filename,
                mode=attrs.st_mode,
                size=attrs.st_size,
                mtime=None if attrs.st_mtime is None else int(attrs.st_mtime),
            )
            for attrs in _listdir_attr(sftp, self.config.remote_dir)
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
            if remote.size > 0:
                _prefetch(handle, remote.size)
            # Read at most one byte past the listed size: a file that grew is refused
            # without downloading all of it.
            remaining = remote.size + 1
            while remaining > 0:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                staged.write(chunk)
                crash_point("mid_download")
                remaining -= len(chunk)
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

    # -- connection, retries, error mapping ----------------------------------------

    def _run(self, action: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        retrying = Retrying(
            stop=stop_after_attempt(self.config.max_attempts),
            wait=wait_exponential_jitter(
                multiplier=self._backoff_seconds,
                max=_MAX_BACKOFF_SECONDS,
                jitter=self._backoff_seconds,
            ),
            retry=retry_if_exception_type(TransientSourceError),
            sleep=self._sleep,
            before_sleep=self._log_retry(action),
        )
        with self._lock:
            try:
                return retrying(lambda: self._attempt(action, operation))
            except RetryError as exc:
                last = exc.last_attempt.exception()
                raise TransientSourceError(
                    f"{action} on {self.where} failed after {self.config.max_attempts} "
                    f"attempts; last error: {last}"
                ) from last

    def _attempt(self, action: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        try:
            return operation(self._connect())
        except Exception as exc:
            error = self._as_source_error(exc, action)
            if error is None:
                raise
            if isinstance(error, TransientSourceError):
                self._disconnect()
            if error is exc:
                raise
            raise error from exc

    def _log_retry(self, action: str) -> Callable[[RetryCallState], None]:
        def log(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            logger.warning(
                "%s on %s: attempt %d of %d failed (%s); reconnecting",
                action,
                self.where,
                state.attempt_number,
                self.config.max_attempts,
                error,
            )

        return log

    def _connect(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._sftp
        self._disconnect()
        pkey = self._private_key()
        timeout = self.config.connect_timeout_seconds
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(PinnedHostKeyPolicy(self._pinned, self.where))
        try:
            client.connect(
                hostname=self.config.host,
                port=self.config.port,
                username=self.config.username,
                pkey=pkey,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                allow_agent=False,
                look_for_keys=False,
                disabled_algorithms=self._disabled_algorithms,
            )
            transport = client.get_transport()
            if transport is None:
                raise paramiko.SSHException("no transport after connect")
            # Belt and braces: whatever paramiko did, the key in use must be pinned.
            server_key = transport.get_remote_server_key()
            verify_host_key(server_key, self._pinned, self.where)
            sftp = client.open_sftp()
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(timeout)
        except BaseException:
            client.close()
            raise
        self._client, self._sftp = client, sftp
        logger.info(
            "connected to %s as %s (host key %s)",
            self.where,
            self.config.username,
            describe_key(server_key),
        )
        return sftp

    def _disconnect(self) -> None:
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        if sftp is not None:
            # Closing a broken session must not mask the error that broke it.
            with contextlib.suppress(Exception):
                sftp.close()
        if client is not None:
            client.close()

    def _private_key(self) -> paramiko.PKey:
        if self._pkey is None:
            ref = self.config.private_key
            text = resolve_secret(ref, base_dir=self._base_dir).get_secret_value()
            passphrase = None
            if self.config.private_key_passphrase is not None:
                passphrase = resolve_secret(
                    self.config.private_key_passphrase, base_dir=self._base_dir
                ).get_secret_value()
            self._pkey = load_private_key(text, passphrase, ref)
        return self._pkey

    def _as_source_error(self, exc: Exception, action: str) -> BatchbridgeError | None:
        """Map an exception to the error tree; None means 'not ours, re-raise as is'."""
        if isinstance(exc, BatchbridgeError):
            return exc
        if isinstance(exc, paramiko.AuthenticationException):
            return SourceError(
                f"{self.where} refused the configured private key for user "
                f"{self.config.username!r} (authentication failed; not retried)",
                reason="auth_failed",
            )
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyError(f"host key of {self.where} did not match the pinned keys")
        if isinstance(exc, paramiko.ssh_exception.IncompatiblePeer):
            if "host key" in str(exc):
                types = ", ".join(sorted({key.get_name() for key in self._pinned}))
                return HostKeyError(
                    f"{self.where} offers none of the pinned host key types ({types}); "
                    "refusing to connect"
                )
            return SourceError(
                f"{action}: no common SSH algorithms with {self.where} ({_brief(exc)})"
            )
        if isinstance(exc, _TRANSIENT_TYPES) or (
            isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS
        ):
            return TransientSourceError(
                f"{action} on {self.where}: connection problem "
                f"({type(exc).__name__}: {_brief(exc)})"
            )
        if isinstance(exc, FileNotFoundError):
            return SourceError(
                f"{action} on {self.where}: no such file or folder", reason="remote_missing"
            )
        if isinstance(exc, PermissionError):
            return SourceError(
                f"{action} on {self.where}: permission denied", reason="permission_denied"
            )
        if isinstance(exc, OSError | paramiko.SFTPError):
            return SourceError(f"{action} on {self.where} failed ({_brief(exc)})")
        return None


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
            f"cannot connect to {where} ({type(exc).__name__}: {_brief(exc)})"
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
        raise SourceError(f"no common SSH algorithms with {where} ({_brief(exc)})") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise TransientSourceError(
            f"SSH handshake with {where} failed ({type(exc).__name__}: {_brief(exc)})"
        ) from None
    finally:
        transport.close()


def _listdir_attr(sftp: paramiko.SFTPClient, path: str) -> list[paramiko.SFTPAttributes]:
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


def _prefetch(handle: paramiko.SFTPFile, size: int) -> None:
    """`handle.prefetch(size)`, except that a dropped link does not crash its thread loudly.

    paramiko sends the read requests from a background thread. When the connection drops
    mid-download, that thread dies with an unhandled exception (a traceback on stderr,
    outside our error tree). The reading thread meets the same dead connection and raises
    it as a TransientSourceError, so the background thread's copy of it is dropped.
    """
    file: Any = handle  # the prefetch thread's target is not in the type stubs
    send_requests = file._prefetch_thread

    def send_quietly(*args: Any) -> None:
        try:
            send_requests(*args)
        except (EOFError, OSError, paramiko.SSHException) as exc:
            logger.debug("prefetch requests stopped: %s", type(exc).__name__)

    # Read by paramiko when prefetch() starts the thread.
    file._prefetch_thread = send_quietly
    handle.prefetch(size)


def _brief(exc: BaseException) -> str:
    """Exception text for a message: server-supplied, so escaped and bounded."""
    text = str(exc) or type(exc).__name__
    if not text.isprintable():
        text = repr(text)
    return text[:200]


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.lstat(path)
    except FileNotFoundError:
        return False
    return True
