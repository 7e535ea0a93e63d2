"""An in-process SFTP server (paramiko) serving one folder on 127.0.0.1, for the demo and tests.

Public-key auth with one authorized key, its own ed25519 host key, and the folder shown
to clients as "/". Paths that would leave the folder (also through symlinks) are refused.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import posixpath
import socket
import threading
from base64 import b64decode
from pathlib import Path
from typing import IO, Any

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import SFTP_FAILURE, SFTP_OK, SFTP_OP_UNSUPPORTED

from batchbridge.connectors.lifecycle import StoppedOnExit
from batchbridge.demo.keys import generate_ed25519

logger = logging.getLogger(__name__)
_ACCEPT_POLL_SECONDS = 0.2
_TRANSPORT_LOGGER = f"{__name__}.transport"
logging.getLogger(_TRANSPORT_LOGGER).setLevel(logging.CRITICAL)


class _RootedHandle(paramiko.SFTPHandle):
    """An open local file; paramiko's SFTPHandle reads/writes `readfile`/`writefile`."""

    def __init__(self, handle: IO[bytes], flags: int) -> None:
        super().__init__(flags)
        self.readfile = handle
        self.writefile = handle
        self._handle = handle

    def stat(self) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self._handle.fileno()))
        except OSError as exc:
            return _status(exc)

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        return SFTP_OP_UNSUPPORTED


class _RootedSftp(paramiko.SFTPServerInterface):
    """SFTP operations confined to one local folder, which clients see as '/'."""

    def __init__(self, server: paramiko.ServerInterface, root: Path, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self.root = os.path.realpath(root)

    def _local(self, path: str, *, follow: bool = True) -> str:
        """Map a client path to a local one inside root, or raise PermissionError."""
        virtual = posixpath.normpath(posixpath.join("/", path))
        lexical = os.path.join(self.root, virtual.lstrip("/"))
        if follow:
            real = os.path.realpath(lexical)
        else:
            parent, name = os.path.split(lexical)
            real = os.path.join(os.path.realpath(parent), name) if name else self.root
        if real != self.root and not real.startswith(self.root + os.sep):
            raise PermissionError(errno.EACCES, "path escapes the served folder")
        return real

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        try:
            folder = self._local(path)
            entries = []
            for name in sorted(os.listdir(folder)):
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    continue  # not representable on the wire
                info = os.lstat(os.path.join(folder, name))
                entries.append(paramiko.SFTPAttributes.from_stat(info, filename=name))
            return entries
        except OSError as exc:
            return _status(exc)

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._local(path)))
        except OSError as exc:
            return _status(exc)

    def lstat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.lstat(self._local(path, follow=False)))
        except OSError as exc:
            return _status(exc)

    def open(
        self, path: str, flags: int, attr: paramiko.SFTPAttributes
    ) -> paramiko.SFTPHandle | int:
        try:
            local = self._local(path)
            mode = attr.st_mode if attr is not None and attr.st_mode is not None else 0o644
            fd = os.open(local, flags | getattr(os, "O_NOFOLLOW", 0), mode & 0o7777)
        except OSError as exc:
            return _status(exc)
        access = flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
        if access == os.O_WRONLY:
            file_mode = "ab" if flags & os.O_APPEND else "wb"
        elif access == os.O_RDWR:
            file_mode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            file_mode = "rb"
        return _RootedHandle(os.fdopen(fd, file_mode), flags)

    def remove(self, path: str) -> int:
        try:
            os.remove(self._local(path, follow=False))
        except OSError as exc:
            return _status(exc)
        return SFTP_OK

    def rename(self, oldpath: str, newpath: str) -> int:
        try:
            old, new = self._local(oldpath, follow=False), self._local(newpath, follow=False)
            if os.path.lexists(new):
                return SFTP_FAILURE  # SFTP rename must not overwrite
            os.rename(old, new)
        except OSError as exc:
            return _status(exc)
        return SFTP_OK

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        try:
            old, new = self._local(oldpath, follow=False), self._local(newpath, follow=False)
            os.replace(old, new)
        except OSError as exc:
            return _status(exc)
        return SFTP_OK

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        mode = attr.st_mode if attr is not None and attr.st_mode is not None else 0o755
        try:
            os.mkdir(self._local(path, follow=False), mode & 0o7777)
        except OSError as exc:
            return _status(exc)
        return SFTP_OK

    def rmdir(self, path: str) -> int:
        try:
            os.rmdir(self._local(path, follow=False))
        except OSError as exc:
            return _status(exc)
        return SFTP_OK

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        try:
            paramiko.SFTPServer.set_file_attr(self._local(path), attr)
        except OSError as exc:
            return _status(exc)
        return SFTP_OK


class _KeyOnlyServer(paramiko.ServerInterface):
    """Accepts one user with one public key, sessions only (used for the sftp subsystem)."""

    def __init__(self, username: str, authorized_key: paramiko.PKey) -> None:
        self.username = username
        self.authorized_key = authorized_key

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.username and key.asbytes() == self.authorized_key.asbytes():
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class EmbeddedSftpServer(StoppedOnExit):
    """Serves `root` over SFTP on 127.0.0.1 from a background thread until `stop()`."""

    def __init__(
        self,
        root: Path,
        authorized_key_line: str,
        *,
        username: str = "batchbridge",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.root = root
        self.username = username
        self.host = host
        self._authorized_key = _public_key(authorized_key_line)
        pair = generate_ed25519()
        self.host_key_line = pair.public_line
        self._host_key = paramiko.Ed25519Key.from_private_key(io.StringIO(pair.private_openssh))
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(16)
        self._listener.settimeout(_ACCEPT_POLL_SECONDS)
        self.port = int(self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._transports: list[paramiko.Transport] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._serve, name=f"embedded-sftp-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close every connection, wait for the server thread."""
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self.drop_connections()

    def drop_connections(self) -> None:
        """Close every open connection but keep listening (lets tests cut a session)."""
        with self._lock:
            transports, self._transports = self._transports, []
        for transport in transports:
            transport.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self._start_transport(conn)
            except Exception:
                logger.exception("embedded SFTP server could not start a session")
                conn.close()

    def _start_transport(self, conn: socket.socket) -> None:
        conn.settimeout(None)
        transport = paramiko.Transport(conn)
        # Server side of a local stand-in: clients disconnecting mid-read are normal here,
        # and the client reports every failure that matters.
        transport.set_log_channel(_TRANSPORT_LOGGER)
        transport.add_server_key(self._host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _RootedSftp, root=self.root)
        with self._lock:
            self._transports = [t for t in self._transports if t.is_active()]
            self._transports.append(transport)
        # With an event, start_server returns at once; negotiation runs on the
        # transport's own thread and failures just end that connection.
        transport.start_server(event=threading.Event(), server=self._auth_server())

    def _auth_server(self) -> _KeyOnlyServer:
        return _KeyOnlyServer(self.username, self._authorized_key)


def start_sftp_server(
    root: Path, authorized_key_line: str, *, username: str = "batchbridge"
) -> EmbeddedSftpServer:
    """Serve `root` on a free 127.0.0.1 port to the holder of `authorized_key_line`."""
    root.mkdir(parents=True, exist_ok=True)
    return EmbeddedSftpServer(root, authorized_key_line, username=username)


def _status(exc: OSError) -> int:
    """The SFTP status code for a local OSError."""
    if exc.errno is None:
        return SFTP_FAILURE
    return int(paramiko.SFTPServer.convert_errno(exc.errno))


def _public_key(line: str) -> paramiko.PKey:
    fields = line.split()
    if len(fields) < 2:
        raise ValueError("authorized key must look like 'ssh-ed25519 AAAA…'")
    return paramiko.PKey.from_type_string(fields[0], b64decode(fields[1]))
