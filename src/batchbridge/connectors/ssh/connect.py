"""One SSH/SFTP connection recipe for the SFTP source and target: pinned host key, key auth.

Both connectors connect the same way (only the pinned host keys are accepted, only the
configured private key is offered: no agent, no ~/.ssh) and sort failures the same way
(`classify_ssh_failure`); each maps the result onto its own branch of the error tree.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paramiko
import paramiko.sftp as sftp_codes

from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.ssh.host_keys import (
    PinnedHostKeyPolicy,
    disabled_host_key_algorithms,
    load_private_key,
    verify_host_key,
)
from batchbridge.errors import BatchbridgeError

logger = logging.getLogger(__name__)

TRANSIENT_ERRNOS = frozenset(
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
TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    EOFError,
    paramiko.SSHException,
    TimeoutError,
    ConnectionError,
    socket.gaierror,
    paramiko.ssh_exception.NoValidConnectionsError,
)

# Reads are pipelined (`read_pipelined`): this many bytes in flight hide the round trip,
# and the channel's receive window must hold them all or the server pauses mid-pipeline
# (paramiko's default window is 2 MiB, less than 16 requests of 255 KiB).
IN_FLIGHT_BYTES = 4 * 1024 * 1024
SFTP_WINDOW_BYTES = 4 * IN_FLIGHT_BYTES
# Requests in flight at most, as OpenSSH's sftp (-R 64): the count some servers queue.
MAX_READS_IN_FLIGHT = 64
# The read size every server accepts (the SFTP drafts' 32768-byte minimum packet), and the
# largest we ask for even when a server allows more (OpenSSH allows 255 KiB).
SAFE_READ_SIZE = 32768
MAX_READ_SIZE = 256 * 1024
LIMITS_EXTENSION = "limits@openssh.com"

FailureKind = Literal["host_key", "auth", "transient", "missing", "permission", "other"]


@dataclass(frozen=True)
class SshFailure:
    """What went wrong, in words fit for a log: `reason` None means the error class's default."""

    kind: FailureKind
    message: str
    reason: str | None = None


@dataclass(frozen=True)
class SftpSession:
    """An open SSH connection, its SFTP channel, and the host key the server proved."""

    client: paramiko.SSHClient
    sftp: paramiko.SFTPClient
    server_key: paramiko.PKey

    def is_active(self) -> bool:
        """Whether the SSH transport is still up."""
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        """Close the SFTP channel, then the connection; never raises."""
        # Closing a broken session must not mask the error that broke it.
        with contextlib.suppress(Exception):
            self.sftp.close()
        self.client.close()


class ExtendedSftpClient(paramiko.SFTPClient):
    """An SFTPClient that remembers the extensions the server announced in its version packet.

    paramiko reads and drops that list; a writer needs it to know whether the server
    offers `posix-rename@openssh.com` (atomic replace) and `fsync@openssh.com`.
    """

    server_extensions: dict[str, bytes]
    _read_size: int | None = None

    def _send_version(self) -> int:
        # Same exchange as paramiko's BaseSFTP._send_version, keeping the extension pairs.
        # Its packet helpers and protocol version are not in the type stubs.
        base: Any = self
        codes: Any = sftp_codes
        message = paramiko.Message()
        message.add_int(codes._VERSION)
        base._send_packet(sftp_codes.CMD_INIT, message)
        kind, data = base._read_packet()
        if kind != sftp_codes.CMD_VERSION:
            raise paramiko.SFTPError("Incompatible sftp protocol")
        self.server_extensions = parse_version_extensions(data[4:])
        return int(struct.unpack(">I", data[:4])[0])

    def offers(self, extension: str) -> bool:
        """Whether the server announced `extension` (e.g. 'posix-rename@openssh.com')."""
        return extension in self.server_extensions

    def read_size(self) -> int:
        """The read size to ask for: the server's limits@openssh.com answer (capped), else 32 KiB.

        Asked once per connection; a server that announces the extension and then refuses
        it gets the size every server accepts.
        """
        if self._read_size is None:
            self._read_size = SAFE_READ_SIZE
            if self.offers(LIMITS_EXTENSION):
                base: Any = self  # the request layer is not in the type stubs
                try:
                    kind, msg = base._request(sftp_codes.CMD_EXTENDED, LIMITS_EXTENSION)
                except OSError as exc:
                    if is_transient(exc):
                        raise
                    kind = None
                if kind == sftp_codes.CMD_EXTENDED_REPLY:
                    msg.get_int64()  # max-packet-length; the read length follows it
                    limit = msg.get_int64()
                    if limit > 0:  # 0 means the server states no limit: keep the safe size
                        self._read_size = min(limit, MAX_READ_SIZE)
        return self._read_size


def parse_version_extensions(data: bytes) -> dict[str, bytes]:
    """Extension name -> data from the tail of an SSH_FXP_VERSION packet; stops at bad input."""
    found: dict[str, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        (name_len,) = struct.unpack(">I", data[pos : pos + 4])
        name_end = pos + 4 + name_len
        if name_end + 4 > len(data):
            break
        (value_len,) = struct.unpack(">I", data[name_end : name_end + 4])
        value_end = name_end + 4 + value_len
        if value_end > len(data):
            break
        name = data[pos + 4 : name_end].decode("utf-8", "replace")
        found[name] = data[name_end + 4 : value_end]
        pos = value_end
    return found


def load_client_key(
    private_key: str, passphrase: str | None, *, base_dir: Path | None
) -> paramiko.PKey:
    """Resolve the private key reference (and its passphrase reference) and load the key."""
    text = resolve_secret(private_key, base_dir=base_dir).get_secret_value()
    secret = None
    if passphrase is not None:
        secret = resolve_secret(passphrase, base_dir=base_dir).get_secret_value()
    return load_private_key(text, secret, private_key)


def open_sftp_session(
    *,
    host: str,
    port: int,
    username: str,
    pkey: paramiko.PKey,
    pinned: Sequence[paramiko.PKey],
    timeout: float,
    sftp_class: type[paramiko.SFTPClient] = paramiko.SFTPClient,
) -> SftpSession:
    """Connect with key auth to a server holding one of the `pinned` host keys; open SFTP.

    A server presenting any other key is refused with HostKeyError before we authenticate.
    Every step is bounded by `timeout`; the SFTP channel keeps it as its read timeout.
    """
    where = f"{host}:{port}"
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(PinnedHostKeyPolicy(pinned, where))
    try:
        client.connect(
            hostname=host,
            port=port,
            username=username,
            pkey=pkey,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
            disabled_algorithms={"keys": disabled_host_key_algorithms(pinned)},
        )
        transport = client.get_transport()
        if transport is None:
            raise paramiko.SSHException("no transport after connect")
        # Belt and braces: whatever paramiko did, the key in use must be pinned.
        server_key = transport.get_remote_server_key()
        verify_host_key(server_key, pinned, where)
        sftp = sftp_class.from_transport(transport, window_size=SFTP_WINDOW_BYTES)
        if sftp is None:
            raise paramiko.SSHException("the server refused the sftp subsystem")
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(timeout)
    except BaseException:
        client.close()
        raise
    return SftpSession(client=client, sftp=sftp, server_key=server_key)


def is_transient(exc: BaseException) -> bool:
    """A dropped, refused or timed-out connection: another attempt may succeed."""
    return isinstance(exc, TRANSIENT_TYPES) or (
        isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS
    )


def classify_ssh_failure(
    exc: Exception,
    *,
    action: str,
    where: str,
    username: str,
    pinned: Sequence[paramiko.PKey],
) -> SshFailure | None:
    """Sort a paramiko/socket/SFTP exception; None for anything else (including our own errors).

    Messages name the server, the user and the action, never file content.
    """
    if isinstance(exc, BatchbridgeError):
        return None
    if isinstance(exc, paramiko.AuthenticationException):
        return SshFailure(
            "auth",
            f"{where} refused the configured private key for user {username!r} "
            "(authentication failed; not retried)",
            reason="auth_failed",
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        return SshFailure("host_key", f"host key of {where} did not match the pinned keys")
    if isinstance(exc, paramiko.ssh_exception.IncompatiblePeer):
        if "host key" in str(exc):
            types = ", ".join(sorted({key.get_name() for key in pinned}))
            return SshFailure(
                "host_key",
                f"{where} offers none of the pinned host key types ({types}); refusing to connect",
            )
        return SshFailure(
            "other", f"{action}: no common SSH algorithms with {where} ({brief(exc)})"
        )
    if is_transient(exc):
        return SshFailure(
            "transient",
            f"{action} on {where}: connection problem ({type(exc).__name__}: {brief(exc)})",
        )
    if isinstance(exc, FileNotFoundError):
        return SshFailure(
            "missing", f"{action} on {where}: no such file or folder", reason="remote_missing"
        )
    if isinstance(exc, PermissionError):
        return SshFailure(
            "permission", f"{action} on {where}: permission denied", reason="permission_denied"
        )
    if isinstance(exc, OSError | paramiko.SFTPError):
        return SshFailure("other", f"{action} on {where} failed ({brief(exc)})")
    return None


def prefetch_quietly(handle: paramiko.SFTPFile, size: int) -> None:
    """`handle.prefetch(size)`, except that a dropped link does not crash its thread loudly.

    paramiko sends the read requests from a background thread. When the connection drops
    mid-download, that thread dies with an unhandled exception (a traceback on stderr,
    outside our error tree). The reading thread meets the same dead connection and raises
    it as a transient error, so the background thread's copy of it is dropped. For a
    whole-file read prefer `read_pipelined` (it says why).
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


class _Replies:
    """Replies to our read requests, by request number, as paramiko hands them over."""

    def __init__(self) -> None:
        self.by_number: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, kind: int, msg: paramiko.Message, number: int) -> None:
        # SFTPClient._read_response calls this for a reply whose request names us as owner.
        self.by_number[number] = (kind, msg)


def read_pipelined(
    sftp: paramiko.SFTPClient,
    handle: paramiko.SFTPFile,
    length: int,
    *,
    read_size: int | None = None,
    depth: int | None = None,
) -> Iterator[bytes]:
    """The first `length` bytes of open file `handle`, in order; fewer when the file ends first.

    Keeps `depth` requests of `read_size` bytes in flight from this thread, as OpenSSH's
    sftp does, asking for each byte once (defaults: the server's read limit, and enough
    requests for IN_FLIGHT_BYTES). Not paramiko's `prefetch()`: when its request thread
    falls behind (the GIL, a busy host), the reader takes the download for finished and
    reads the rest one round trip per 32 KiB while the thread fetches it all again into
    memory (paramiko #2418, #2519): 42 MiB took 0.5 s one run, 8 to 23 s another.
    """
    client: Any = sftp  # the request layer is not in the type stubs
    if read_size is None:
        read_size = sftp.read_size() if isinstance(sftp, ExtendedSftpClient) else SAFE_READ_SIZE
    if depth is None:
        depth = max(1, min(MAX_READS_IN_FLIGHT, IN_FLIGHT_BYTES // read_size))
    replies = _Replies()
    pending: deque[tuple[int, int, int]] = deque()  # (request number, offset, size), file order
    sent_to = 0

    def request(offset: int, size: int) -> tuple[int, int, int]:
        args = (sftp_codes.CMD_READ, handle.handle, sftp_codes.int64(offset), size)
        return client._async_request(replies, *args), offset, size

    while True:
        while len(pending) < depth and sent_to < length:
            pending.append(request(sent_to, min(read_size, length - sent_to)))
            sent_to += pending[-1][2]
        if not pending:
            return
        number, offset, size = pending.popleft()
        while number not in replies.by_number:
            client._read_response()  # one reply, handed to its owner (replies of ours)
        kind, msg = replies.by_number.pop(number)
        if kind == sftp_codes.CMD_STATUS:
            try:
                client._convert_status(msg)  # raises EOFError at the end, OSError on errors
            except EOFError:
                return  # requests still in flight reply into `replies`, then are dropped
        if kind != sftp_codes.CMD_DATA:
            raise paramiko.SFTPError("expected data in reply to a read")
        data = msg.get_string()
        if not data:
            return
        yield data
        if len(data) < size:
            # A short reply (the end of the file, or a server's own cap): ask for the rest
            # next, before the requests in flight, and from now on for no more than the
            # server gave -- but not under 4 KiB, or one odd reply would slow every read.
            read_size = max(len(data), 4096)
            pending.appendleft(request(offset + len(data), size - len(data)))


def brief(exc: BaseException) -> str:
    """Exception text for a message: server-supplied, so escaped and bounded."""
    text = str(exc) or type(exc).__name__
    if not text.isprintable():
        text = repr(text)
    return text[:200]
