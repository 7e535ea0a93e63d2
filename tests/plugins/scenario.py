"""pytest fixtures: a lab_results feed on the module's real sshd, loading real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchbridge.demo.scenario import LabFeedScenario, SftpEndpoint, build_lab_scenario
from tests.support.feed_scenarios import postgres_target
from tests.support.sshd import SshdServer


def postgres_lab_scenario(
    tmp_path: Path, endpoint: SftpEndpoint, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> LabFeedScenario:
    """The lab_results feed on `endpoint`, its warehouse and ledger both at `postgres_url`."""
    monkeypatch.setenv("BB_TEST_WAREHOUSE_URL", postgres_url)
    # The ledger on PostgreSQL too: the production configuration.
    monkeypatch.setenv("BATCHBRIDGE_DATABASE_URL", postgres_url)
    monkeypatch.setenv("BATCHBRIDGE_STAGING_DIR", str(tmp_path / "staging"))
    return build_lab_scenario(
        tmp_path / "feed", endpoint, targets=[postgres_target("BB_TEST_WAREHOUSE_URL")]
    )


@pytest.fixture
def scenario(
    tmp_path: Path,
    sshd_server: SshdServer,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LabFeedScenario]:
    built = postgres_lab_scenario(tmp_path, sshd_server.endpoint(), postgres_url, monkeypatch)
    yield built
    built.close()
