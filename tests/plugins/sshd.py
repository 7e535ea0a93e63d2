"""pytest fixtures: a real OpenSSH sshd on 127.0.0.1 and SftpSourceConfig factories for it."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchbridge.config import SftpSourceConfig
from tests.plugins.missing import missing_part
from tests.support.sshd import SSHD_BINARY, SshdServer, sshd_available, start_sshd

SftpConfigFactory = Callable[..., SftpSourceConfig]


def require_sshd() -> None:
    """Skip when sshd is missing on a developer machine; in CI (env CI set) fail instead."""
    if not sshd_available():
        missing_part(
            f"{SSHD_BINARY} not found: install openssh-server to run the SFTP integration tests"
        )


@pytest.fixture(scope="module")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """One real sshd per test module, logging in as the current user with a fresh key."""
    require_sshd()
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def sftp_config_for(server: SshdServer, **overrides: Any) -> SftpSourceConfig:
    """An SftpSourceConfig for `server`: a fresh remote_dir under its root, fast stability.

    `remote_dir` is an absolute path on this machine (no chroot) and is created here.
    """
    remote_dir = server.root / f"inbox-{secrets.token_hex(4)}"
    remote_dir.mkdir()
    values: dict[str, Any] = {
        **server.login(),
        "remote_dir": str(remote_dir),
        "glob": "*.csv.pgp",
        "stable_seconds": 0.2,
        "min_age_seconds": 0,
        "connect_timeout_seconds": 5,
        "max_attempts": 2,
    }
    values.update(overrides)
    return SftpSourceConfig(**values)


@pytest.fixture
def sftp_source_config(sshd_server: SshdServer) -> SftpConfigFactory:
    """Factory: `sftp_source_config(**overrides)` builds a config for the module's sshd."""

    def make(**overrides: Any) -> SftpSourceConfig:
        return sftp_config_for(sshd_server, **overrides)

    return make
