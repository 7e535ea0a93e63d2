"""Health checks without servers: key expiry, host key logic with fakes, secrets, target probes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest

from batchbridge.cli.app import main
from batchbridge.config import UNPINNED_HOST_KEY, LoadedFeed, load_feed
from batchbridge.connectors.sources.sftp import SftpProbe
from batchbridge.connectors.ssh.host_keys import fingerprint, parse_host_key
from batchbridge.connectors.targets.base import CANARY_TABLE
from batchbridge.connectors.targets.fhir import FhirTarget
from batchbridge.connectors.targets.sftp_probe import PROBE_CONTENT, probe_remote_dir
from batchbridge.demo.keys import generate_ed25519
from batchbridge.errors import HostKeyError, SourceError, TargetError, TransientSourceError
from batchbridge.monitoring.health_checks import feed_secret_references, run_feed_checks
from batchbridge.monitoring.health_keys import assess_key_expiry
from batchbridge.monitoring.health_model import CheckResult, FeedHealth
from batchbridge.monitoring.health_report import render_health_markdown
from batchbridge.monitoring.health_source import check_sftp
from batchbridge.monitoring.health_targets import check_target
from batchbridge.validations.base import FhirIdentity
from batchbridge.validations.schemas.lab_results import LAB_RESULTS
from tests.unit.feed_helpers import write_feed

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


# -- key expiry ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expiries", "severity", "words"),
    [
        ([None], "ok", "does not expire"),
        ([NOW + timedelta(days=200)], "ok", "expires on 2027-06-08"),
        ([NOW + timedelta(days=10)], "warning", "in 10 days"),
        ([NOW - timedelta(days=1)], "error", "expired on 2026-11-19"),
        # A rotated-out subkey that expired does not matter while a newer one is valid.
        ([NOW - timedelta(days=5), NOW + timedelta(days=400)], "ok", "expires on"),
        ([], "error", "no unrevoked part"),
    ],
)
def test_assess_key_expiry(expiries: list[datetime | None], severity: str, words: str) -> None:
    got, detail = assess_key_expiry("partner key X", expiries, now=NOW, warning_days=30)
    assert got == severity and words in detail and detail.startswith("partner key X")


def test_warnings_do_not_fail_a_feed_and_skips_do_not_count_as_failures() -> None:
    health = FeedHealth(feed="f", tenant="t", checked_at="now")
    health.checks = [CheckResult.passed("a", "x"), CheckResult.warning("b", "soon")]
    assert health.status == "warning" and not health.failed
    health.checks.append(CheckResult.skipped("c", "after b"))
    assert health.status == "warning" and health.counts()["skipped"] == 1
    health.checks.append(CheckResult.failed("d", "broken | piped"))
    assert health.status == "failed" and [c.name for c in health.failed] == ["d"]
    assert "broken \\| piped" in render_health_markdown(health)  # a cell cannot break the table


def test_a_good_local_feed_is_all_green(tmp_path: Path) -> None:
    feeds = write_feed(tmp_path)
    health = run_feed_checks("lab_results", feeds, now=NOW)
    assert health.status == "ok", health.to_dict()
    names = [c.name for c in health.checks]
    assert names == [
        "config",
        "source.folder",
        "pgp.our_key",
        "pgp.partner_key[1]",
        "secrets",
        "mappings",
        "target.warehouse",
    ]
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        rows = conn.execute("SELECT tenant FROM batchbridge_health_canary").fetchall()
    assert rows == [("acme_lab",)]


def test_expiring_partner_key_warns_and_expired_key_fails(tmp_path: Path) -> None:
    soon = run_feed_checks(
        "lab_results", write_feed(tmp_path / "a", partner_expires_in=timedelta(days=10)), now=NOW
    )
    check = {c.name: c for c in soon.checks}["pgp.partner_key[1]"]
    assert check.severity == "warning" and check.ok and soon.status == "warning"

    # The same key seen 20 days later has expired.
    later = run_feed_checks(
        "lab_results",
        write_feed(tmp_path / "b", partner_expires_in=timedelta(days=10)),
        now=datetime.now(UTC) + timedelta(days=20),
    )
    check = {c.name: c for c in later.checks}["pgp.partner_key[1]"]
    assert check.severity == "error" and "expired on" in check.detail


def test_wrong_passphrase_and_missing_secret_fail_without_showing_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feeds = write_feed(tmp_path, extra={"quarantine_previous_keys": ["env:BB_TEST_OLD_QKEY"]})
    (tmp_path / "secrets" / "passphrase").write_text("not-the-passphrase")
    monkeypatch.delenv("BB_TEST_OLD_QKEY", raising=False)
    health = run_feed_checks("lab_results", feeds, now=NOW)
    by_name = {c.name: c for c in health.checks}
    assert by_name["pgp.our_key"].severity == "error"
    assert "passphrase was rejected" in by_name["pgp.our_key"].detail
    assert by_name["secrets"].severity == "error"
    assert "env:BB_TEST_OLD_QKEY" in by_name["secrets"].detail
    assert "1 of 6 not usable" in by_name["secrets"].detail

    (tmp_path / "secrets" / "quarantine").write_text("short")
    monkeypatch.setenv("BB_TEST_OLD_QKEY", "k" * 32)
    detail = {c.name: c for c in run_feed_checks("lab_results", feeds, now=NOW).checks}[
        "secrets"
    ].detail
    assert "file:../secrets/quarantine: quarantine key secret is too short" in detail
    assert "not-the-passphrase" not in str(health.to_dict())


def test_secret_references_cover_previous_keys_and_the_webhook(tmp_path: Path) -> None:
    feeds = write_feed(
        tmp_path,
        extra={
            "quarantine_previous_keys": ["env:OLD"],
            "alerts": {"webhook": "env:HOOK"},
        },
    )
    refs = feed_secret_references(load_feed("lab_results", feeds).config)
    assert "env:OLD" in refs and "env:HOOK" in refs and len(refs) == len(set(refs))


def test_a_broken_mapping_and_a_broken_yaml_fail_their_checks(tmp_path: Path) -> None:
    feeds = write_feed(tmp_path)
    (tmp_path / "loinc.csv").write_text("local_test_code,loinc_code\nGLU,2345-7\n")
    by_name = {c.name: c for c in run_feed_checks("lab_results", feeds, now=NOW).checks}
    assert (
        by_name["mappings"].severity == "error" and "missing columns" in by_name["mappings"].detail
    )

    (feeds / "lab_results.yaml").write_text("feed: lab_results\nsurprise: 1\n")
    health = run_feed_checks("lab_results", feeds, now=NOW)
    assert [(c.name, c.severity) for c in health.checks] == [("config", "error")]


# -- targets ---------------------------------------------------------------------------


def test_unwritable_sqlite_target_fails(tmp_path: Path) -> None:
    feeds = write_feed(tmp_path)
    (tmp_path / "warehouse.db").mkdir()  # a folder where the database file should be
    check = {c.name: c for c in run_feed_checks("lab_results", feeds, now=NOW).checks}[
        "target.warehouse"
    ]
    assert check.severity == "error" and "health canary" in check.detail


def test_existing_table_without_a_configured_column_fails(tmp_path: Path) -> None:
    feeds = write_feed(tmp_path)
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        conn.execute("CREATE TABLE lab_result (tenant TEXT, record_id TEXT, patient_key TEXT)")
    check = {c.name: c for c in run_feed_checks("lab_results", feeds, now=NOW).checks}[
        "target.warehouse"
    ]
    assert check.severity == "error" and "lacks columns loinc_code" in check.detail


def test_a_target_kind_without_canary_is_skipped(tmp_path: Path) -> None:
    loaded = load_feed("lab_results", write_feed(tmp_path))

    class Plain:
        name = "warehouse"

        def close(self) -> None:
            pass

    target = loaded.config.targets[0]
    results = check_target(loaded, target, open_=lambda *_: Plain())  # type: ignore[arg-type,return-value]
    assert [(r.name, r.severity) for r in results] == [("target.warehouse", "skipped")]


def test_each_target_kind_says_what_its_probe_did(tmp_path: Path) -> None:
    loaded = load_feed("lab_results", write_feed(tmp_path))
    config = loaded.config.targets[0]
    (sqlite,) = check_target(loaded, config)
    assert sqlite.severity == "ok"
    assert sqlite.detail == "wrote, read back and committed the acme_lab row of " + CANARY_TABLE

    posted: list[bytes] = []

    def fhir(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metadata"):
            return httpx.Response(
                200, json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}
            )
        posted.append(request.content)
        entry = {"response": {"status": "200 OK"}}
        return httpx.Response(200, json={"type": "transaction-response", "entry": [entry]})

    target = FhirTarget(
        "fhir",
        "https://fhir.example/r4",
        LAB_RESULTS,
        FhirIdentity("urn:batchbridge:acme_lab:lab_results", "urn:batchbridge:patient-key"),
        ["patient_key"],
        transport=httpx.MockTransport(fhir),
    )
    (result,) = check_target(loaded, config, open_=lambda *_: target)
    assert result.severity == "ok" and "canary" not in result.detail
    assert result.detail == (
        "read the FHIR 4.0.1 CapabilityStatement of fhir.example and ran a transaction "
        "holding one count-only search; nothing written"
    )
    search = {"request": {"method": "GET", "url": "Patient?_summary=count"}}
    assert [json.loads(body)["entry"] for body in posted] == [[search]]


class ProbedTarget:
    """A target whose probe fails the way the test says; records whether it was closed."""

    name = "partner_sftp"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.closed = False

    def probe_health(self, tenant: str) -> str:
        raise self.error

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (
            TargetError(
                "target partner_sftp: health probe: rename .bb.part to .bb in /in on "
                "sftp.example:22: permission denied",
                reason="permission_denied",
            ),
            "[permission_denied] target partner_sftp: health probe: rename .bb.part to .bb "
            "in /in on sftp.example:22: permission denied",
        ),
        (RuntimeError("secret-value"), "unexpected RuntimeError (message withheld)"),
    ],
)
def test_a_failing_probe_names_its_step_and_the_target_is_closed(
    tmp_path: Path, error: Exception, detail: str
) -> None:
    loaded = load_feed("lab_results", write_feed(tmp_path))
    target = ProbedTarget(error)
    results = check_target(loaded, loaded.config.targets[0], open_=lambda *_: target)  # type: ignore[arg-type,return-value]
    assert [(r.severity, r.detail) for r in results] == [("error", detail)]
    assert target.closed


# -- SFTP host key logic with fakes ------------------------------------------------------


def sftp_feed(tmp_path: Path, host_keys: list[str]) -> LoadedFeed:
    source = {
        "kind": "sftp",
        "host": "sftp.partner.example",
        "port": 2222,
        "username": "bb",
        "remote_dir": "/out",
        "glob": "*.pgp",
        "host_keys": host_keys,
        "private_key": "env:BB_TEST_UNUSED_KEY",
        "max_attempts": 3,
    }
    return load_feed("lab_results", write_feed(tmp_path, source=source))


class FakeSource:
    """Stands in for SftpSource: records that it was used, returns a canned probe."""

    def __init__(self, probe: SftpProbe) -> None:
        self.result = probe
        self.opened = False

    def __call__(self, config: Any, base: Path) -> FakeSource:
        self.opened = True
        return self

    def __enter__(self) -> FakeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def probe(self) -> SftpProbe:
        return self.result


def fetcher(key: paramiko.PKey | Exception, calls: list[int] | None = None) -> Callable[..., Any]:
    def fetch(host: str, port: int, **kwargs: Any) -> paramiko.PKey:
        if calls is not None:
            calls.append(port)
        if isinstance(key, Exception):
            raise key
        return key

    return fetch


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def test_pinned_host_key_then_login_and_listing(tmp_path: Path) -> None:
    line = generate_ed25519().public_line
    source = FakeSource(SftpProbe(authenticated=True, matching=2, refused=1))
    results = _by_name(
        check_sftp(
            sftp_feed(tmp_path, [line]),
            fetch_host_key=fetcher(parse_host_key(line)),
            open_sftp=source,  # type: ignore[arg-type]
        )
    )
    assert [r.severity for r in results.values()] == ["ok"] * 4
    assert "2 file(s) match" in results["sftp.remote_dir"].detail
    assert "1 refused" in results["sftp.remote_dir"].detail


def test_changed_host_key_names_both_fingerprints_and_sends_no_credentials(
    tmp_path: Path,
) -> None:
    pinned, offered = generate_ed25519().public_line, generate_ed25519().public_line
    source = FakeSource(SftpProbe(authenticated=True, matching=0, refused=0))
    results = _by_name(
        check_sftp(
            sftp_feed(tmp_path, [pinned]),
            fetch_host_key=fetcher(parse_host_key(offered)),
            open_sftp=source,  # type: ignore[arg-type]
        )
    )
    host_key = results["sftp.host_key"]
    assert host_key.severity == "error" and not host_key.ok
    assert fingerprint(parse_host_key(offered)) in host_key.detail
    assert fingerprint(parse_host_key(pinned)) in host_key.detail
    assert results["sftp.auth"].severity == "skipped"
    assert not source.opened


def test_server_without_the_pinned_key_type_is_a_changed_key(tmp_path: Path) -> None:
    pinned = generate_ed25519().public_line
    offered = paramiko.ECDSAKey.generate()
    asked: list[list[str]] = []

    def fetch(host: str, port: int, *, disabled_algorithms: list[str], **_: Any) -> Any:
        asked.append(list(disabled_algorithms))
        if "ecdsa-sha2-nistp256" in disabled_algorithms:
            raise HostKeyError("no host key of the requested types", reason="host_key_type")
        return offered

    results = _by_name(check_sftp(sftp_feed(tmp_path, [pinned]), fetch_host_key=fetch))
    assert results["sftp.reachable"].severity == "ok"
    assert results["sftp.host_key"].severity == "error"
    assert fingerprint(offered) in results["sftp.host_key"].detail
    assert fingerprint(parse_host_key(pinned)) in results["sftp.host_key"].detail
    assert asked[-1] == []  # asked again for any key type, to name the one offered


def test_unreachable_server_is_retried_then_fails(tmp_path: Path) -> None:
    calls: list[int] = []
    sleeps: list[float] = []
    results = _by_name(
        check_sftp(
            sftp_feed(tmp_path, [generate_ed25519().public_line]),
            fetch_host_key=fetcher(TransientSourceError("connection refused"), calls),
            sleep=sleeps.append,
        )
    )
    assert len(calls) == 3 and len(sleeps) == 2
    assert results["sftp.reachable"].severity == "error"
    assert [results[n].severity for n in ("sftp.host_key", "sftp.auth", "sftp.remote_dir")] == [
        "skipped"
    ] * 3


def test_unpinned_placeholder_says_how_to_pin(tmp_path: Path) -> None:
    offered = parse_host_key(generate_ed25519().public_line)
    results = _by_name(
        check_sftp(sftp_feed(tmp_path, [UNPINNED_HOST_KEY]), fetch_host_key=fetcher(offered))
    )
    detail = results["sftp.host_key"].detail
    assert results["sftp.host_key"].severity == "error"
    assert "onboard host-key sftp.partner.example --port 2222" in detail
    assert fingerprint(offered) in detail
    assert results["sftp.auth"].severity == "skipped"


@pytest.mark.parametrize(
    ("probe", "auth", "listing"),
    [
        (
            SftpProbe(authenticated=False, error=SourceError("refused", reason="auth_failed")),
            "error",
            "skipped",
        ),
        (
            SftpProbe(authenticated=True, error=SourceError("nope", reason="remote_missing")),
            "ok",
            "error",
        ),
    ],
)
def test_login_and_listing_failures_are_told_apart(
    tmp_path: Path, probe: SftpProbe, auth: str, listing: str
) -> None:
    line = generate_ed25519().public_line
    results = _by_name(
        check_sftp(
            sftp_feed(tmp_path, [line]),
            fetch_host_key=fetcher(parse_host_key(line)),
            open_sftp=FakeSource(probe),  # type: ignore[arg-type]
        )
    )
    assert results["sftp.auth"].severity == auth
    assert results["sftp.remote_dir"].severity == listing


# -- CLI -------------------------------------------------------------------------------


def test_health_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feeds = write_feed(tmp_path)
    assert main(["health", "--config-dir", str(feeds)]) == 0
    assert "feed lab_results (tenant acme_lab): OK" in capsys.readouterr().out
    assert main(["health", "nope", "--config-dir", str(feeds)]) == 2
    (tmp_path / "secrets" / "pseudonym").unlink()
    assert main(["health", "lab_results", "--config-dir", str(feeds)]) == 14  # HealthCheckError
    out = capsys.readouterr().out
    assert "FAILED   secrets" in out and "file:../secrets/pseudonym" in out


# -- the outbound SFTP probe's steps, with a fake session --------------------------------


class ProbeSftp:
    """An in-memory SFTP folder; `fail` names the step that fails, `short` truncates writes."""

    def __init__(self, fail: str | None = None, short: bool = False) -> None:
        self.files: dict[str, bytes] = {}
        self.fail = fail
        self.short = short

    def open(self, path: str, mode: str) -> Any:
        files, short = self.files, self.short

        class Handle:
            def __enter__(self) -> Handle:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def write(self, data: bytes) -> None:
                files[path] = data[:-1] if short else data

        return Handle()

    def rename(self, old: str, new: str) -> None:
        if self.fail == "rename":
            raise PermissionError(old)
        self.files[new] = self.files.pop(old)

    def stat(self, path: str) -> paramiko.SFTPAttributes:
        attrs = paramiko.SFTPAttributes()
        attrs.st_size = len(self.files[path])
        return attrs

    def remove(self, path: str) -> None:
        if self.fail == "delete":
            self.fail = None  # fails once; the clean-up after it succeeds
            raise PermissionError(path)
        del self.files[path]


class ProbeSession:
    """What the probe uses of an SshSession: run (mapping errors as the target does), where."""

    where = "sftp.example:22"

    def __init__(self, sftp: ProbeSftp) -> None:
        self.sftp = sftp

    def run(self, action: str, operation: Callable[[Any], Any]) -> Any:
        try:
            return operation(self.sftp)
        except PermissionError:
            raise TargetError(
                f"target drop: {action} on {self.where}: permission denied",
                reason="permission_denied",
            ) from None


@pytest.mark.parametrize(
    ("sftp", "words"),
    [
        (ProbeSftp(fail="rename"), "health probe: rename .batchbridge-health-"),
        (ProbeSftp(short=True), "has 72 bytes, 73 were written"),
        (ProbeSftp(fail="delete"), "health probe: delete .batchbridge-health-"),
    ],
)
def test_a_failed_probe_step_is_named_and_the_probe_file_removed(
    sftp: ProbeSftp, words: str
) -> None:
    session: Any = ProbeSession(sftp)
    with pytest.raises(TargetError) as caught:
        probe_remote_dir(session, "/out", target="drop")
    assert words in str(caught.value) and "sftp.example:22" in str(caught.value)
    assert sftp.files == {}


def test_a_passing_probe_says_each_step() -> None:
    sftp = ProbeSftp()
    session: Any = ProbeSession(sftp)
    detail = probe_remote_dir(session, "/out", target="drop")
    assert detail.startswith("in /out on sftp.example:22: wrote a 73-byte probe file (fixed text")
    assert detail.endswith("checked its size, deleted it") and sftp.files == {}
    assert len(PROBE_CONTENT) == 73
