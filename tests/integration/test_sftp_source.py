"""SftpSource against a real OpenSSH sshd (and the embedded paramiko server) on loopback."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paramiko
import pytest
from paramiko.sftp import CMD_READ

from batchbridge import progress
from batchbridge.config import SftpSourceConfig
from batchbridge.connectors.sources.base import RemoteFile
from batchbridge.connectors.sources.sftp import SftpSource
from batchbridge.connectors.ssh.connect import (
    MAX_READ_SIZE,
    SAFE_READ_SIZE,
    SFTP_WINDOW_BYTES,
    ExtendedSftpClient,
)
from batchbridge.demo.keys import generate_ed25519, write_secret_file
from batchbridge.demo.sftp_server import EmbeddedSftpServer, start_sftp_server
from batchbridge.errors import (
    HostKeyError,
    IncompleteDownloadError,
    SourceError,
    TransientSourceError,
    UnsafeRemoteNameError,
)
from tests.plugins.sshd import SftpConfigFactory, require_sshd, sftp_config_for
from tests.support.sshd import SshdServer, start_sshd

pytestmark = pytest.mark.integration
OLD = time.time() - 3600


def put(folder: Path, name: str | bytes, data: bytes, mtime: float = OLD) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]


@pytest.fixture
def config(sftp_source_config: SftpConfigFactory) -> SftpSourceConfig:
    return sftp_source_config()


@pytest.fixture
def source(config: SftpSourceConfig) -> Iterator[SftpSource]:
    with SftpSource(config, backoff_seconds=0.01) as opened:
        yield opened


def test_lists_only_safe_regular_glob_matches(
    config: SftpSourceConfig, source: SftpSource, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Path(config.remote_dir)
    put(inbox, "LAB_2.csv.pgp", b"22")
    put(inbox, "LAB_1.csv.pgp", b"1")
    put(inbox, "readme.txt", b"r")
    (inbox / "link.csv.pgp").symlink_to(put(inbox.parent, "outside.bin", b"secret"))
    (inbox / "folder.csv.pgp").mkdir()
    put(inbox, "-dash.csv.pgp", b"d")
    put(inbox, "esc\x1b[0m.csv.pgp", b"e")
    put(inbox, b"latin1-\xe9.csv.pgp", b"l")  # not UTF-8: must not break the listing
    with caplog.at_level(logging.WARNING):
        ready = source.list_ready()
    assert [(r.name, r.size) for r in ready] == [("LAB_1.csv.pgp", 1), ("LAB_2.csv.pgp", 2)]
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert "'link.csv.pgp'" in warnings and "symbolic link" in warnings
    assert "'folder.csv.pgp'" in warnings and "not a regular file" in warnings
    assert "'-dash.csv.pgp'" in warnings
    assert "\\x1b[0m" in warnings and "\x1b" not in warnings
    assert "'latin1-\\udce9.csv.pgp'" in warnings and "not valid UTF-8" in warnings


def test_fetch_verifies_size_hashes_and_keeps_staging_private(
    config: SftpSourceConfig, source: SftpSource, tmp_path: Path
) -> None:
    data = os.urandom(2 * 1024 * 1024 + 3)
    put(Path(config.remote_dir), "LAB_1.csv.pgp", data)
    (remote,) = source.list_ready()
    staging = tmp_path / "staging"
    fetched = source.fetch(remote, staging)
    assert fetched.size == len(data)
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    assert fetched.local_path == staging / "LAB_1.csv.pgp"
    assert fetched.local_path.read_bytes() == data
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700
    assert stat.S_IMODE(fetched.local_path.stat().st_mode) == 0o600
    assert [p.name for p in staging.iterdir()] == ["LAB_1.csv.pgp"]


def test_fetch_asks_for_each_byte_once_in_large_pipelined_reads(
    config: SftpSourceConfig,
    source: SftpSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = os.urandom(6 * 1024 * 1024 + 5)
    put(Path(config.remote_dir), "BIG.csv.pgp", data)
    (remote,) = source.list_ready()
    reads: list[tuple[int, int]] = []
    send = paramiko.SFTPClient._async_request  # type: ignore[attr-defined]

    def spy(client: paramiko.SFTPClient, owner: object, kind: int, *args: Any) -> Any:
        if kind == CMD_READ:
            reads.append((int(args[1]), int(args[2])))
        return send(client, owner, kind, *args)

    monkeypatch.setattr(paramiko.SFTPClient, "_async_request", spy)
    amounts: list[int] = []  # the fetch reports its progress through `advanced` only
    listener: Any = SimpleNamespace(advanced=amounts.append)
    with progress.listening(listener):
        fetched = source.fetch(remote, tmp_path / "staging")
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    # The reads tile the file and the byte past its end: each byte asked for once. The
    # last came back a byte short, so that byte was asked again: the file did not grow.
    *tiles, again = reads
    assert [offset for offset, _ in tiles] == [0, *(o + n for o, n in tiles[:-1])]
    assert sum(size for _, size in tiles) == len(data) + 1
    assert again == (len(data), 1)
    # OpenSSH's limits@openssh.com raises the read size above paramiko's 32 KiB.
    sftp = source._session.sftp
    assert isinstance(sftp, ExtendedSftpClient)
    assert SAFE_READ_SIZE < sftp.read_size() <= MAX_READ_SIZE
    assert {size for _, size in tiles[:-1]} == {sftp.read_size()}
    channel = sftp.get_channel()
    assert channel is not None and channel.in_window_size == SFTP_WINDOW_BYTES
    # Progress streams: the bytes arrive in many steps that add up to the file.
    assert sum(amounts) == len(data) and len(amounts) > 10


def test_fetch_refuses_truncation_and_links_appearing_after_listing(
    config: SftpSourceConfig, source: SftpSource, tmp_path: Path
) -> None:
    inbox = Path(config.remote_dir)
    put(inbox, "A.csv.pgp", b"abcdef")
    put(inbox, "B.csv.pgp", b"abc")
    first, second = source.list_ready()
    (inbox / "A.csv.pgp").write_bytes(b"abc")
    (inbox / "B.csv.pgp").unlink()
    (inbox / "B.csv.pgp").symlink_to("/etc/hostname")
    staging = tmp_path / "staging"
    with pytest.raises(IncompleteDownloadError, match="now 3 bytes on the server, listed as 6"):
        source.fetch(first, staging)
    with pytest.raises(UnsafeRemoteNameError, match="symbolic link"):
        source.fetch(second, staging)
    assert list(staging.iterdir()) == []


def test_file_still_being_written_is_not_picked_up(
    config: SftpSourceConfig, source: SftpSource
) -> None:
    inbox = Path(config.remote_dir)
    put(inbox, "done.csv.pgp", b"complete")
    growing = put(inbox, "growing.csv.pgp", b"start")
    stop = threading.Event()

    def writer() -> None:
        with growing.open("ab") as handle:
            while not stop.is_set():
                handle.write(b"row\n")
                handle.flush()
                stop.wait(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.05)
        ready = source.list_ready()
    finally:
        stop.set()
        thread.join()
    assert [r.name for r in ready] == ["done.csv.pgp"]
    assert [r.name for r in source.list_ready()] == ["done.csv.pgp", "growing.csv.pgp"]


def test_file_younger_than_min_age_is_not_picked_up(
    sftp_source_config: SftpConfigFactory,
) -> None:
    config = sftp_source_config(min_age_seconds=600, stable_seconds=0)
    fresh = put(Path(config.remote_dir), "fresh.csv.pgp", b"x", mtime=time.time())
    with SftpSource(config) as source:
        assert source.list_ready() == []
        os.utime(fresh, (OLD, OLD))
        assert [r.name for r in source.list_ready()] == ["fresh.csv.pgp"]


def test_unpinned_host_key_is_refused(
    sshd_server: SshdServer, sftp_source_config: SftpConfigFactory
) -> None:
    config = sftp_source_config(host_keys=[generate_ed25519().public_line], max_attempts=3)
    server_key = paramiko.PKey.from_type_string(
        "ssh-ed25519", _b64(sshd_server.host_key_line.split()[1])
    )
    started = time.monotonic()
    with SftpSource(config, backoff_seconds=5) as source, pytest.raises(HostKeyError) as caught:
        source.list_ready()
    assert time.monotonic() - started < 3, "a host key mismatch must not be retried"
    message = str(caught.value)
    assert f"127.0.0.1:{sshd_server.port}" in message
    assert f"ssh-ed25519 {_fingerprint(server_key)}" in message
    assert "did not match" in message


def test_changed_host_key_after_rotation_is_refused(tmp_path: Path) -> None:
    require_sshd()
    with start_sshd(tmp_path / "sshd") as server:
        config = sftp_config_for(server)
        put(Path(config.remote_dir), "A.csv.pgp", b"a")
        with SftpSource(config) as source:
            assert len(source.list_ready()) == 1
        server.rotate_host_key()
        with SftpSource(config) as source, pytest.raises(HostKeyError, match="did not match"):
            source.list_ready()
        with SftpSource(sftp_config_for(server)) as source:  # the new key, once pinned, works
            assert source.list_ready() == []


def test_wrong_client_key_fails_auth_without_retrying(
    sftp_source_config: SftpConfigFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = write_secret_file(tmp_path / "other_key", generate_ed25519().private_openssh)
    config = sftp_source_config(private_key=f"file:{other}", max_attempts=3)
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING),
        SftpSource(config, backoff_seconds=5) as source,
        pytest.raises(SourceError) as caught,
    ):
        source.list_ready()
    assert caught.value.reason == "auth_failed"
    assert not isinstance(caught.value, TransientSourceError)
    assert time.monotonic() - started < 3
    assert retry_warnings(caplog) == []


def test_processed_dir_move_is_idempotent(
    sftp_source_config: SftpConfigFactory, tmp_path: Path
) -> None:
    config = sftp_source_config(processed_dir="processed")
    inbox = Path(config.remote_dir)
    put(inbox, "A.csv.pgp", b"a")
    with SftpSource(config) as source:
        (remote,) = source.list_ready()
        source.fetch(remote, tmp_path / "staging")
        source.mark_processed(remote)
        source.mark_processed(remote)
        assert source.list_ready() == []
        with pytest.raises(SourceError) as caught:
            source.mark_processed(RemoteFile("never.csv.pgp", 1, 1))
    assert caught.value.reason == "remote_missing"
    assert (inbox / "processed" / "A.csv.pgp").read_bytes() == b"a"
    assert not (inbox / "A.csv.pgp").exists()


def test_unreachable_server_gives_up_after_max_attempts(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = write_secret_file(tmp_path / "key", generate_ed25519().private_openssh)
    config = SftpSourceConfig(
        host="127.0.0.1",
        port=port,
        username="nobody",
        remote_dir="/in",
        glob="*",
        host_keys=[generate_ed25519().public_line],
        private_key=f"file:{key}",
        max_attempts=2,
        connect_timeout_seconds=2,
    )
    with (
        SftpSource(config, backoff_seconds=0.01) as source,
        pytest.raises(TransientSourceError) as caught,
    ):
        source.list_ready()
    assert "failed after 2 attempts" in str(caught.value)


# -- the embedded paramiko server (demo default) -----------------------------------


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[EmbeddedSftpServer, SftpSourceConfig]]:
    pair = generate_ed25519()
    key_path = write_secret_file(tmp_path / "client_key", pair.private_openssh)
    root = tmp_path / "served"
    (root / "outbound").mkdir(parents=True)
    with start_sftp_server(root, pair.public_line) as server:
        config = SftpSourceConfig(
            host=server.host,
            port=server.port,
            username=server.username,
            remote_dir="/outbound",
            glob="*.csv.pgp",
            host_keys=[server.host_key_line],
            private_key=f"file:{key_path}",
            stable_seconds=0.1,
            min_age_seconds=0,
            processed_dir="/outbound/processed",
        )
        yield server, config


def test_embedded_server_lists_fetches_and_moves(
    embedded: tuple[EmbeddedSftpServer, SftpSourceConfig], tmp_path: Path
) -> None:
    server, config = embedded
    outbound = server.root / "outbound"
    data = os.urandom(1024 * 1024)
    put(outbound, "LAB_1.csv.pgp", data)
    (outbound / "escape.csv.pgp").symlink_to(put(tmp_path, "secret", b"s"))
    with SftpSource(config) as source:
        (remote,) = source.list_ready()
        fetched = source.fetch(remote, tmp_path / "staging")
        source.mark_processed(remote)
        sftp = source._session.sftp
        # No limits@openssh.com here: reads keep the size every server accepts.
        assert isinstance(sftp, ExtendedSftpClient) and sftp.read_size() == SAFE_READ_SIZE
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    assert (outbound / "processed" / "LAB_1.csv.pgp").exists()


def test_embedded_server_reconnects_after_a_dropped_session(
    embedded: tuple[EmbeddedSftpServer, SftpSourceConfig],
) -> None:
    server, config = embedded
    put(server.root / "outbound", "LAB_1.csv.pgp", b"x")
    with SftpSource(config, backoff_seconds=0.01) as source:
        assert len(source.list_ready()) == 1
        server.drop_connections()
        assert len(source.list_ready()) == 1


def test_embedded_server_refuses_paths_outside_its_root(
    embedded: tuple[EmbeddedSftpServer, SftpSourceConfig], tmp_path: Path
) -> None:
    server, config = embedded
    (server.root / "outbound" / "out").symlink_to(tmp_path)
    client = paramiko.SSHClient()
    client.get_host_keys().add(
        f"[{server.host}]:{server.port}",
        "ssh-ed25519",
        paramiko.PKey.from_type_string("ssh-ed25519", _b64(server.host_key_line.split()[1])),
    )
    key_text = Path(config.private_key.removeprefix("file:")).read_text()
    try:
        client.connect(
            server.host,
            server.port,
            username=server.username,
            pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(key_text)),
            allow_agent=False,
            look_for_keys=False,
        )
        sftp = client.open_sftp()
        with pytest.raises(PermissionError):
            sftp.listdir("/outbound/out")
        with pytest.raises(FileNotFoundError):
            sftp.stat("/../../../etc/hostname")
        assert sftp.normalize("/../..") == "/"
    finally:
        client.close()


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def _fingerprint(key: paramiko.PKey) -> str:
    import base64

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
