"""Health checks and onboarding against a real sshd, real PostgreSQL and gpg-made files."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import psycopg
import pytest
import yaml

from batchbridge.cli.app import main
from batchbridge.config import load_feed
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.demo.scenario import LabFeedScenario, lab_file_name
from batchbridge.flows.health import health_check
from batchbridge.monitoring.health_checks import run_feed_checks
from tests.integration.flow_helpers import libpq_url, target_rows
from tests.support.sshd import SshdServer

pytestmark = pytest.mark.integration

FILE_DATE = date(2026, 11, 20)
CANARIES = ["CANARY-QUILLON-ZEPHYRINE"]


def _severities(scenario: LabFeedScenario) -> dict[str, str]:
    health = run_feed_checks(scenario.feed, scenario.config_dir)
    return {check.name: check.severity for check in health.checks}


def _edit_feed(scenario: LabFeedScenario, edit: dict[str, object]) -> None:
    data = yaml.safe_load(scenario.feed_path.read_text(encoding="utf-8"))
    for dotted, value in edit.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[leaf] = value
    scenario.feed_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_health_all_green_for_a_good_feed(
    scenario: LabFeedScenario, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["health", scenario.feed, "--config-dir", str(scenario.config_dir), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    (health,) = json.loads(out)
    assert health["status"] == "ok"
    by_name = {check["name"]: check for check in health["checks"]}
    assert {
        "config",
        "sftp.reachable",
        "sftp.host_key",
        "sftp.auth",
        "sftp.remote_dir",
        "pgp.our_key",
        "pgp.partner_key[1]",
        "secrets",
        "mappings",
        "target.warehouse",
    } <= set(by_name)
    assert all(check["severity"] == "ok" for check in health["checks"]), health
    # The canary row is kept, one per tenant, and the loaded table is untouched.
    with psycopg.connect(libpq_url(postgres_url)) as conn:
        rows = conn.execute("SELECT tenant FROM batchbridge_health_canary").fetchall()
    assert rows == [(scenario.tenant,)]
    assert target_rows(postgres_url) == {}
    # Running it again updates the same row.
    assert _severities(scenario)["target.warehouse"] == "ok"
    with psycopg.connect(libpq_url(postgres_url)) as conn:
        assert conn.execute("SELECT count(*) FROM batchbridge_health_canary").fetchone() == (1,)


def test_unreachable_target_fails_its_check(scenario: LabFeedScenario) -> None:
    _edit_feed(
        scenario, {"targets.0.url": "env:BB_TEST_DEAD_WAREHOUSE", "targets.0.max_attempts": 1}
    )
    with pytest.MonkeyPatch.context() as patch:
        # A closed port on loopback: connection refused at once.
        patch.setenv("BB_TEST_DEAD_WAREHOUSE", "postgresql://nobody@127.0.0.1:1/none")
        health = run_feed_checks(scenario.feed, scenario.config_dir)
    by_name = {check.name: check for check in health.checks}
    target = by_name["target.warehouse"]
    assert target.severity == "error" and not target.ok
    assert "connect" in target.detail
    assert by_name["sftp.auth"].severity == "ok"  # one broken part does not hide the others
    assert health.status == "failed"


def test_expired_partner_key_fails_and_remote_dir_missing_fails(
    scenario: LabFeedScenario, gpg_keys: object
) -> None:
    from tests.plugins.gpg import GpgTestKeys

    assert isinstance(gpg_keys, GpgTestKeys)
    expired = scenario.root / "secrets" / "expired_partner.asc"
    expired.write_text(gpg_keys.expired_public, encoding="utf-8")
    _edit_feed(
        scenario,
        {
            "pgp.partner_public_keys": [f"file:{expired}"],
            "source.remote_dir": str(scenario.endpoint.drop_dir / "no-such-folder"),
        },
    )
    by_name = {c.name: c for c in run_feed_checks(scenario.feed, scenario.config_dir).checks}
    partner = by_name["pgp.partner_key[1]"]
    assert partner.severity == "error" and "expired on" in partner.detail
    assert gpg_keys.expired_fpr[-16:] in partner.detail
    assert by_name["sftp.auth"].severity == "ok"
    assert by_name["sftp.remote_dir"].severity == "error"
    assert "remote_missing" in by_name["sftp.remote_dir"].detail


@pytest.mark.usefixtures("prefect_api")
def test_health_flow_publishes_artifact_and_fails_on_a_failed_check(
    scenario: LabFeedScenario,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    good = health_check(feed=scenario.feed, config_dir=str(scenario.config_dir), return_state=True)
    assert good.is_completed(), good.message
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["lab-results-health"]))
        )
    assert artifacts
    markdown = str(artifacts[-1].data)
    assert "| sftp.host_key | ok |" in markdown and "| check | status | detail |" in markdown

    _edit_feed(scenario, {"mappings.local_test_code": "../mappings/missing.csv"})
    bad = health_check(feed=scenario.feed, config_dir=str(scenario.config_dir), return_state=True)
    assert bad.is_failed()
    assert "mappings" in str(bad.message)


def test_dry_run_reports_unmapped_codes_and_loads_nothing(
    scenario: LabFeedScenario, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = generate_lab_rows(
        40,
        seed=5,
        file_date=FILE_DATE,
        bad_rows={"unmapped_code": 3, "bad_npi": 1},
        canary_names=CANARIES,
    )
    sample = scenario.drop_file(lab_file_name(FILE_DATE), frame)
    args = [
        "onboard",
        "dry-run",
        scenario.feed,
        str(sample),
        "--config-dir",
        str(scenario.config_dir),
    ]

    assert main(args) == 9  # 4 of 40 quarantined: over the feed's 5% alert threshold
    text = capsys.readouterr()
    assert "over threshold" in text.out + text.err
    assert "ZZ-NOT-IN-MAP" in text.out
    line = next(line for line in text.out.splitlines() if line.strip().endswith("ZZ-NOT-IN-MAP"))
    assert line.split() == ["3", "ZZ-NOT-IN-MAP"]
    assert "40 rows, trailer says 40 = rows read" in text.out
    assert "36 valid, 4 quarantined" in text.out
    assert "1 unmapped on 3 of 40 rows (7.5%)" in text.out

    assert main([*args, "--json"]) == 9
    report = json.loads(capsys.readouterr().out)
    (coverage,) = report["coverage"]
    assert coverage["unmapped"] == {"ZZ-NOT-IN-MAP": 3}
    assert report["reasons"]["local_test_code:unmapped_code"] == 3
    assert report["signer_fingerprint"] == scenario.partner_fpr
    assert report["loaded"] == 0

    # Nothing loaded, nothing recorded, no patient value in any output.
    assert target_rows(postgres_url) == {}
    with psycopg.connect(libpq_url(postgres_url)) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    assert tables == []  # no target table, no ledger (files, runs, quarantined_rows)
    assert not any(name in text.out + text.err for name in CANARIES)


def test_dry_run_of_an_unsigned_file_fails_whole(
    scenario: LabFeedScenario, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = generate_lab_rows(10, seed=6, file_date=FILE_DATE)
    sample = scenario.drop_file(lab_file_name(FILE_DATE), frame, signer_fpr=None)
    code = main(
        ["onboard", "dry-run", scenario.feed, str(sample), "--config-dir", str(scenario.config_dir)]
    )
    out = capsys.readouterr().out
    assert code == 4, out
    assert "decrypt           FAILED [" in out and "fails whole" in out


def test_dry_run_of_a_plaintext_sample_warns(
    scenario: LabFeedScenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchbridge.demo.lab_data import render_lab_csv

    sample = tmp_path / "synthetic.csv"
    sample.write_bytes(
        render_lab_csv(
            generate_lab_rows(12, seed=8, file_date=FILE_DATE, bad_rows={"unmapped_code": 2})
        )
    )
    args = ["onboard", "dry-run", scenario.feed, str(sample), "--plaintext"]
    # 2 of 12 quarantined is over the 5% threshold: the dry run says so and exits 9.
    assert main([*args, "--config-dir", str(scenario.config_dir)]) == 9
    captured = capsys.readouterr()
    assert "must be synthetic" in captured.err
    assert "decrypt + verify  skipped" in captured.out
    assert "1 unmapped on 2 of 12 rows" in captured.out


def test_onboard_host_key_prints_the_servers_key_line(
    sshd_server: SshdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["onboard", "host-key", sshd_server.host, "--port", str(sshd_server.port)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert sshd_server.host_key_line.strip() in out.splitlines()
    assert "SHA256:" in out and "out of band" in out.lower()


def test_onboard_scaffold_then_pin_then_host_key_check_passes(
    scenario: LabFeedScenario, sshd_server: SshdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = scenario.config_dir
    host, port = sshd_server.host, str(sshd_server.port)
    scaffold = [
        "onboard", "scaffold", "globex_lab", "--tenant", "globex", "--schema", "lab_results",
        "--host", host, "--port", port, "--user", sshd_server.username,
        "--remote-dir", str(scenario.endpoint.drop_dir), "--glob", "*.pgp",
        "--config-dir", str(config_dir),
    ]  # fmt: skip
    assert main(scaffold) == 0
    assert main(scaffold) == 2  # never overwrites
    capsys.readouterr()
    by_name = {c.name: c for c in run_feed_checks("globex_lab", config_dir).checks}
    assert by_name["sftp.reachable"].severity == "ok"
    assert by_name["sftp.host_key"].severity == "error"
    assert "no host key pinned yet" in by_name["sftp.host_key"].detail
    assert by_name["sftp.auth"].severity == "skipped"

    pin = ["onboard", "host-key", host, "--port", port, "--pin", "globex_lab"]
    assert main([*pin, "--config-dir", str(config_dir)]) == 2  # not confirmed: nothing written
    assert main([*pin, "--confirmed", "--config-dir", str(config_dir)]) == 0
    pinned = load_feed("globex_lab", config_dir).config.source
    assert pinned.kind == "sftp" and pinned.host_keys == [sshd_server.host_key_line.strip()]
    text = (config_dir / "globex_lab.yaml").read_text(encoding="utf-8")
    assert "# Zone of the naive timestamps" in text  # comments survive the edit
    by_name = {c.name: c for c in run_feed_checks("globex_lab", config_dir).checks}
    assert by_name["sftp.host_key"].severity == "ok"
    assert by_name["secrets"].severity == "error"  # the tenant's secrets are not set yet
    assert "env:GLOBEX_SFTP_PRIVATE_KEY" in by_name["secrets"].detail
