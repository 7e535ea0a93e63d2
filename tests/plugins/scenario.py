"""pytest fixtures: a lab_results feed on the module's real sshd, loading real PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchbridge.demo.scenario import (
    LabFeedScenario,
    SftpEndpoint,
    build_lab_scenario,
    postgres_target,
)
from tests.support.sshd import SshdServer


@pytest.fixture
def scenario(
    tmp_path: Path,
    sshd_server: SshdServer,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LabFeedScenario]:
    drop_dir = sshd_server.root / f"drop-{secrets.token_hex(4)}"
    endpoint = SftpEndpoint(
        host=sshd_server.host,
        port=sshd_server.port,
        username=sshd_server.username,
        host_key_line=sshd_server.host_key_line,
        client_private_key=sshd_server.client_private_key,
        remote_dir=str(drop_dir),
        drop_dir=drop_dir,
    )
    monkeypatch.setenv("BB_TEST_WAREHOUSE_URL", postgres_url)
    # The ledger on PostgreSQL too: the production configuration.
    monkeypatch.setenv("BATCHBRIDGE_DATABASE_URL", postgres_url)
    monkeypatch.setenv("BATCHBRIDGE_STAGING_DIR", str(tmp_path / "staging"))
    built = build_lab_scenario(
        tmp_path / "feed", endpoint, targets=[postgres_target("BB_TEST_WAREHOUSE_URL")]
    )
    yield built
    built.close()
