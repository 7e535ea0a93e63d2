"""A real OpenSSH sshd on 127.0.0.1 for integration tests: key auth only, internal-sftp."""

from __future__ import annotations

import os
import pwd
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchbridge.demo.keys import generate_ed25519, write_secret_file
from batchbridge.demo.scenario import SftpEndpoint
from tests.support.lifecycle import StopsOnExit

SSHD_BINARY = Path("/usr/sbin/sshd")
_PRIVSEP_DIR = Path("/run/sshd")
_START_TIMEOUT_SECONDS = 10.0
_PORT_ATTEMPTS = 3


class SshdUnavailableError(RuntimeError):
    """Raised when the sshd binary is missing or the server does not come up."""


@dataclass
class SshdServer(StopsOnExit):
    """A running sshd: where to connect, as whom, which host key to pin, where files live.

    There is no chroot: `root` is a local folder and also the absolute remote path of it.
    """

    workdir: Path
    binary: Path
    host: str
    port: int
    username: str
    host_key_line: str
    client_private_key: str
    client_key_path: Path
    root: Path
    log_path: Path
    config_path: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        """Whether the sshd process is alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop sshd (the listener; sessions end when their clients disconnect)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def rotate_host_key(self) -> str:
        """Restart on the same port with a new host key; returns the new host key line."""
        self.stop()
        self.host_key_line = _write_host_key(self.workdir)
        self._process = _launch(self)
        return self.host_key_line

    def endpoint(
        self, drop_dir: Path | None = None, *, prefix: str = "drop", port: int | None = None
    ) -> SftpEndpoint:
        """A partner endpoint on this server: log in as its user, pin its host key.

        Files go to `drop_dir` (default: a fresh `<prefix>-<random>` folder under `root`;
        the scenario creates it); with no chroot it is also the remote path. `port`
        reaches the server another way, e.g. through a fault proxy.
        """
        folder = drop_dir or self.root / f"{prefix}-{secrets.token_hex(4)}"
        return SftpEndpoint(
            host=self.host,
            port=self.port if port is None else port,
            username=self.username,
            host_key_line=self.host_key_line,
            client_private_key=self.client_private_key,
            remote_dir=str(folder),
            drop_dir=folder,
        )

    def login(self) -> dict[str, Any]:
        """The connection fields of an SFTP source or target config for this server.

        Where it listens, as whom to log in, its host key to pin, the client key file.
        """
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "host_keys": [self.host_key_line],
            "private_key": f"file:{self.client_key_path}",
        }

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of sshd's log (it holds user names and key fingerprints, no secrets)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def sshd_available(binary: Path = SSHD_BINARY) -> bool:
    """Whether an sshd binary is installed at `binary`."""
    return binary.is_file() and os.access(binary, os.X_OK)


def start_sshd(workdir: Path, *, binary: Path = SSHD_BINARY) -> SshdServer:
    """Start sshd in the foreground on a free loopback port, logging into `workdir`.

    Logs in as the current user (root works: PermitRootLogin prohibit-password).
    """
    if not sshd_available(binary):
        raise SshdUnavailableError(
            f"{binary} is not installed; install openssh-server to run the SFTP tests"
        )
    if os.geteuid() == 0:
        _PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "sftp-root"
    root.mkdir(exist_ok=True)
    client = generate_ed25519()
    client_key_path = write_secret_file(workdir / "client_ed25519", client.private_openssh)
    (workdir / "authorized_keys").write_text(client.public_line + "\n", encoding="ascii")
    server = SshdServer(
        workdir=workdir,
        binary=binary,
        host="127.0.0.1",
        port=0,
        username=pwd.getpwuid(os.getuid()).pw_name,
        host_key_line=_write_host_key(workdir),
        client_private_key=client.private_openssh,
        client_key_path=client_key_path,
        root=root,
        log_path=workdir / "sshd.log",
        config_path=workdir / "sshd_config",
    )
    last_error: SshdUnavailableError | None = None
    for _ in range(_PORT_ATTEMPTS):
        server.port = _free_port(server.host)
        try:
            server._process = _launch(server)
        except SshdUnavailableError as exc:  # most likely the port was taken meanwhile
            last_error = exc
            continue
        return server
    assert last_error is not None
    raise last_error


def _write_host_key(workdir: Path) -> str:
    pair = generate_ed25519()
    write_secret_file(workdir / "ssh_host_ed25519_key", pair.private_openssh)
    return pair.public_line


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _config_text(server: SshdServer, *, no_penalties: bool) -> str:
    lines = [
        f"ListenAddress {server.host}",
        f"Port {server.port}",
        f"HostKey {server.workdir / 'ssh_host_ed25519_key'}",
        f"PidFile {server.workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {server.workdir / 'authorized_keys'}",
        f"AllowUsers {server.username}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "StrictModes no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    if no_penalties:
        # OpenSSH >= 9.8 would block 127.0.0.1 after the tests' deliberate auth failures.
        lines.append("PerSourcePenalties no")
    return "\n".join(lines) + "\n"


def _write_config(server: SshdServer) -> None:
    for no_penalties in (True, False):
        server.config_path.write_text(_config_text(server, no_penalties=no_penalties))
        check = subprocess.run(
            [str(server.binary), "-t", "-f", str(server.config_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode == 0:
            return
    raise SshdUnavailableError(f"sshd rejected its test config: {check.stderr.strip()}")


def _launch(server: SshdServer) -> subprocess.Popen[bytes]:
    _write_config(server)
    with server.log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(server.binary), "-D", "-e", "-f", str(server.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SshdUnavailableError(
                f"sshd exited with status {process.returncode}:\n{server.log_tail()}"
            )
        if _banner_ready(server.host, server.port):
            return process
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=5)
    raise SshdUnavailableError(f"sshd did not accept connections in time:\n{server.log_tail()}")


def _banner_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False
