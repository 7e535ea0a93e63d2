"""The health check reports a changed SFTP host key (own module: rotating restarts the sshd)."""

from __future__ import annotations

import pytest

from batchbridge.cli.app import main
from batchbridge.connectors.ssh.host_keys import fingerprint, parse_host_key
from batchbridge.demo.scenario import LabFeedScenario
from batchbridge.monitoring.health_checks import run_feed_checks
from tests.support.sshd import SshdServer

pytestmark = pytest.mark.integration


def test_health_check_reports_a_changed_host_key(
    scenario: LabFeedScenario, sshd_server: SshdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = fingerprint(parse_host_key(sshd_server.host_key_line))
    before = {c.name: c for c in run_feed_checks(scenario.feed, scenario.config_dir).checks}
    assert before["sftp.host_key"].severity == "ok"

    rotated = fingerprint(parse_host_key(sshd_server.rotate_host_key()))
    assert rotated != pinned

    code = main(["health", scenario.feed, "--config-dir", str(scenario.config_dir)])
    out = capsys.readouterr().out
    assert code == 14, out  # HealthCheckError
    checks = {c.name: c for c in run_feed_checks(scenario.feed, scenario.config_dir).checks}
    host_key = checks["sftp.host_key"]
    assert host_key.severity == "error" and not host_key.ok
    # Names what the server offers now and what is pinned, so on-call can compare.
    assert rotated in host_key.detail and pinned in host_key.detail
    assert rotated in out and pinned in out
    # No credential is offered to a server whose key is not pinned.
    assert checks["sftp.auth"].severity == "skipped"
    assert checks["sftp.reachable"].severity == "ok"
    # The other parts of the feed are still checked.
    assert checks["target.warehouse"].severity == "ok"
