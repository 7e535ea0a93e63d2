"""Alerts: building each kind from run reports, late-file timing, webhook payload and retries."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from batchbridge.cli.app import main
from batchbridge.config import AlertsConfig, ArrivalWindow, FeedConfig, LoadedFeed, load_feed
from batchbridge.connectors.sources.base import RemoteFile
from batchbridge.connectors.webhook import WebhookClient, check_webhook_url, parse_retry_after
from batchbridge.errors import AlertDeliveryError, ConfigError
from batchbridge.ledger.run_report import FileReport, RunReport
from batchbridge.monitoring.alert_delivery import deliver_alerts
from batchbridge.monitoring.alert_rules import (
    MAX_WEBHOOK_MESSAGES,
    Alert,
    AlertKind,
    KeyExpiry,
    Severity,
    alerts_for_run,
    key_expiry_alerts,
    late_file_alert,
    render_alert,
    webhook_payload,
)
from batchbridge.monitoring.arrival_rules import (
    SeenFile,
    count_arrivals,
    is_late,
    local_midnight,
    parse_now,
)
from batchbridge.tasks import alerts as alerts_module
from batchbridge.tasks.alerts import alert_on_run
from tests.support.webhook import WebhookReceiver

FEEDS_DIR = Path(__file__).resolve().parents[2] / "deployments" / "feeds"
CHICAGO = "America/Chicago"
CANARY = "Zebulonquix"
RUN_ID = "7d0c6f5e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
FILE_ID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
NAME = "LAB_RESULTS_ACME_20261120.csv.pgp"
WEBHOOK_ENV = "BB_TEST_ALERT_WEBHOOK"


def _loaded(webhook: str | None = f"env:{WEBHOOK_ENV}", threshold: float = 0.05) -> LoadedFeed:
    reference = load_feed("lab_results", FEEDS_DIR)
    alerts = AlertsConfig(
        webhook=webhook,
        arrival=ArrivalWindow(expected_by="01:30", days=["mon", "tue", "wed", "thu", "fri", "sat"]),
        quarantine_rate_threshold=threshold,
    )
    config = reference.config.model_copy(update={"alerts": alerts})
    return LoadedFeed(config=config, path=reference.path)


def _config(threshold: float = 0.05) -> FeedConfig:
    return _loaded(threshold=threshold).config


def _report(*files: FileReport, error: dict[str, str] | None = None) -> RunReport:
    return RunReport(
        run_id=RUN_ID,
        tenant="acme_lab",
        feed="lab_results",
        status="failed" if error or any(f.outcome == "failed" for f in files) else "succeeded",
        files=list(files),
        error=error,
    )


def _failed(stage: str, reason: str, **fields: object) -> FileReport:
    return FileReport(
        name=NAME,
        file_id=FILE_ID,
        outcome="failed",
        failed_stage=stage,
        reason=reason,
        message=f"{NAME}: something about {CANARY}",
        **fields,  # type: ignore[arg-type]
    )


def _reconciled(read: int, quarantined: int, reasons: dict[str, int]) -> FileReport:
    return FileReport(
        name=NAME,
        file_id=FILE_ID,
        outcome="reconciled",
        rows_read=read,
        rows_valid=read - quarantined,
        rows_quarantined=quarantined,
        quarantine_reasons=reasons,
        balanced=True,
    )


# -- building alerts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "reason", "kind"),
    [
        ("decrypt", "unsigned", AlertKind.SIGNATURE_OR_DECRYPT_FAILED),
        ("decrypt", "wrong_signer", AlertKind.SIGNATURE_OR_DECRYPT_FAILED),
        ("decrypt", "no_mdc", AlertKind.SIGNATURE_OR_DECRYPT_FAILED),
        ("reconcile", "counts_unbalanced", AlertKind.COUNTS_UNBALANCED),
        ("validate", "schema_drift", AlertKind.FILE_FAILED),
        ("validate", "trailer_mismatch", AlertKind.FILE_FAILED),
        ("load", "target_failed", AlertKind.FILE_FAILED),
        ("fetch", "host_key_mismatch", AlertKind.HOST_KEY_CHANGED),
    ],
)
def test_a_failed_file_raises_one_alert_of_its_most_specific_kind(
    stage: str, reason: str, kind: AlertKind
) -> None:
    (alert,) = alerts_for_run(_report(_failed(stage, reason)), _config())

    assert alert.kind is kind
    assert alert.severity is Severity.CRITICAL
    assert (alert.feed, alert.tenant, alert.run_id) == ("lab_results", "acme_lab", RUN_ID)
    assert (alert.file_name, alert.file_id) == (NAME, FILE_ID)
    assert alert.title == f"{NAME} failed at {stage}: {reason}"
    assert f"Stage: {stage}. Reason: {reason}." in alert.text
    assert FILE_ID in alert.text and RUN_ID in alert.text


def test_failed_file_alert_carries_its_counts_when_it_was_read() -> None:
    file = _failed("reconcile", "counts_unbalanced", rows_read=40, rows_valid=38)
    file.rows_quarantined = 2  # 5%: at the threshold, so no quarantine_rate alert as well
    (alert,) = alerts_for_run(_report(file), _config())
    assert "Rows read 40, valid 38, quarantined 2." in alert.text


def test_host_key_change_at_connect_is_a_run_level_alert() -> None:
    error = {"stage": "discover", "reason": "host_key_mismatch", "message": "refused"}
    (alert,) = alerts_for_run(_report(error=error), _config())
    assert alert.kind is AlertKind.HOST_KEY_CHANGED and alert.severity is Severity.CRITICAL
    assert alert.file_name is None and alert.run_id == RUN_ID
    assert "out of band" in alert.text


def test_other_run_level_errors_raise_run_failed() -> None:
    error = {"stage": "setup", "reason": "secret_missing", "message": "env:X is not set"}
    (alert,) = alerts_for_run(_report(error=error), _config())
    assert alert.kind is AlertKind.RUN_FAILED
    assert alert.title == "run failed at setup: secret_missing"


def test_a_clean_run_raises_nothing() -> None:
    assert alerts_for_run(_report(_reconciled(100, 2, {"a:b": 2})), _config()) == []
    assert alerts_for_run(_report(), _config()) == []


def test_quarantine_rate_above_threshold_warns_with_top_reasons() -> None:
    reasons = {f"col{i}:rule": i for i in range(1, 8)}  # 7 reasons, 28 rows flagged
    file = _reconciled(200, 28, reasons)

    (alert,) = alerts_for_run(_report(file), _config(threshold=0.1))

    assert alert.kind is AlertKind.QUARANTINE_RATE and alert.severity is Severity.WARNING
    assert alert.title == f"{NAME}: 14.0% of rows quarantined"
    assert "Quarantined 28 of 200 rows (14.0%; threshold 10.0%)." in alert.text
    assert "Top reasons: col7:rule x7, col6:rule x6, col5:rule x5, col4:rule x4, col3:rule x3 " in (
        alert.text
    )
    assert "(+2 more reasons)" in alert.text


def test_quarantine_rate_at_or_below_threshold_is_quiet() -> None:
    assert alerts_for_run(_report(_reconciled(100, 5, {"a:b": 5})), _config(0.05)) == []
    empty = FileReport(name=NAME, file_id=FILE_ID, outcome="reconciled", rows_read=0)
    empty.rows_quarantined = 0
    assert alerts_for_run(_report(empty), _config(0.0)) == []


def test_critical_alerts_come_first() -> None:
    good = _reconciled(10, 9, {"a:b": 9})
    bad = _failed("decrypt", "unsigned")
    kinds = [a.kind for a in alerts_for_run(_report(good, bad), _config())]
    assert kinds == [AlertKind.SIGNATURE_OR_DECRYPT_FAILED, AlertKind.QUARANTINE_RATE]


def test_alert_texts_use_whitelisted_fields_only() -> None:
    """Messages, odd reason codes and odd quarantine reasons never reach an alert."""
    failed = _failed("decrypt", f"unsigned {CANARY}")
    quarantined = _reconciled(10, 9, {f"patient_last_name:{CANARY} Smith": 9})
    error = {"stage": "setup", "reason": "bad", "message": f"boom {CANARY}"}

    alerts = alerts_for_run(_report(failed, quarantined, error=error), _config())

    assert len(alerts) == 3
    for alert in alerts:
        everything = render_alert(alert) + json.dumps(alert.to_dict())
        assert CANARY not in everything
        assert "something about" not in everything  # the FileReport message
    assert "Reason: unrecognised." in alerts[1].text
    assert "unrecognised x9" in alerts[2].text


# -- late files ------------------------------------------------------------------------

WEEKDAYS = ArrivalWindow(expected_by="01:30", days=["mon", "tue", "wed", "thu", "fri"])


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_not_late_before_the_deadline_late_after_it() -> None:
    # Friday 2026-11-20, Chicago is UTC-6: the deadline 01:30 is 07:30 UTC.
    assert not is_late(WEEKDAYS, CHICAGO, _utc("2026-11-20T07:29"), 0)
    assert is_late(WEEKDAYS, CHICAGO, _utc("2026-11-20T07:30"), 0)
    assert not is_late(WEEKDAYS, CHICAGO, _utc("2026-11-20T12:00"), 1)


def test_days_without_an_expected_file_are_never_late() -> None:
    assert not is_late(WEEKDAYS, CHICAGO, _utc("2026-11-21T12:00"), 0)  # Saturday
    assert not is_late(WEEKDAYS, CHICAGO, _utc("2026-11-22T12:00"), 0)  # Sunday
    assert is_late(WEEKDAYS, CHICAGO, _utc("2026-11-23T12:00"), 0)  # Monday


def test_the_day_is_the_feeds_local_day() -> None:
    friday_evening = ArrivalWindow(expected_by="22:00", days=["fri"])
    # Saturday 05:00 UTC is still Friday 23:00 in Chicago.
    assert is_late(friday_evening, CHICAGO, _utc("2026-11-21T05:00"), 0)
    # Friday 22:30 UTC is Friday 16:30 in Chicago: not due yet.
    assert not is_late(friday_evening, CHICAGO, _utc("2026-11-20T22:30"), 0)


def test_fall_back_night_uses_the_first_0130_and_stays_late_in_the_repeated_hour() -> None:
    window = ArrivalWindow(expected_by="01:30")
    # Sunday 2026-11-01: 01:30 CDT (06:30 UTC) comes first, then 01:00-01:59 again as CST.
    assert not is_late(window, CHICAGO, _utc("2026-11-01T06:20"), 0)
    assert is_late(window, CHICAGO, _utc("2026-11-01T06:45"), 0)
    # 01:15 CST: earlier on the clock than 01:30, but after the deadline in real time.
    assert is_late(window, CHICAGO, _utc("2026-11-01T07:15"), 0)


def test_spring_forward_deadline_in_the_gap_falls_an_hour_later() -> None:
    window = ArrivalWindow(expected_by="02:30")
    # Sunday 2026-03-08: 02:00-02:59 does not exist; 02:30 is read as 03:30 CDT (08:30 UTC).
    assert not is_late(window, CHICAGO, _utc("2026-03-08T08:15"), 0)
    assert is_late(window, CHICAGO, _utc("2026-03-08T08:31"), 0)
    # The day after, 02:30 CDT is 07:30 UTC.
    assert is_late(window, CHICAGO, _utc("2026-03-09T07:31"), 0)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_late(WEEKDAYS, CHICAGO, datetime(2026, 11, 20, 12, 0), 0)
    with pytest.raises(ConfigError, match="offset"):
        parse_now("2026-11-20T12:00:00")
    assert parse_now("2026-11-20T06:00:00-06:00") == _utc("2026-11-20T12:00")


def test_local_midnight_across_dst() -> None:
    assert local_midnight(CHICAGO, _utc("2026-11-01T12:00")) == _utc("2026-11-01T05:00")
    assert local_midnight(CHICAGO, _utc("2026-11-02T12:00")) == _utc("2026-11-02T06:00")


def test_arrivals_count_waiting_files_and_files_runs_saw_today() -> None:
    since = _utc("2026-11-20T06:00")
    new = RemoteFile(name="A.pgp", size=10, mtime=0)
    old = RemoteFile(name="OLD.pgp", size=5, mtime=0)
    seen_old = SeenFile("OLD.pgp", 5, since - timedelta(days=3))
    seen_today = SeenFile("B.pgp", 7, since + timedelta(hours=1))

    assert count_arrivals([new], [], since) == 1  # on the server, not fetched yet
    assert count_arrivals([old], [seen_old], since) == 0  # a file left over from before
    assert count_arrivals([], [seen_today], since) == 1  # fetched and moved away already
    assert count_arrivals([new], [SeenFile("A.pgp", 10, since + timedelta(minutes=5))], since) == 1
    # Same name, other size: a new upload, not the old file.
    assert count_arrivals([RemoteFile("OLD.pgp", 6, 0)], [seen_old], since) == 1


def test_late_file_alert_text() -> None:
    deadline = datetime(2026, 11, 20, 1, 30, tzinfo=ZoneInfo(CHICAGO))
    alert = late_file_alert(
        _config(), deadline=deadline, checked_at=_utc("2026-11-20T07:35"), source_problem=None
    )
    assert alert.kind is AlertKind.FILE_LATE and alert.severity is Severity.CRITICAL
    assert alert.title == "file late: expected by 01:30 CST on Fri 2026-11-20"
    assert "checked 01:35 CST" in alert.text and "server could not be listed" not in alert.text
    listed_not = late_file_alert(
        _config(), deadline=deadline, checked_at=deadline, source_problem="host_key_mismatch"
    )
    assert "could not be listed (host_key_mismatch)" in listed_not.text


# -- key expiry ------------------------------------------------------------------------

NOW = _utc("2026-11-20T12:00")
FPR_A = "A" * 40
FPR_B = "B" * 40
FPR_C = "C" * 40


def test_key_expiry_warns_within_the_warning_days_and_is_critical_once_expired() -> None:
    expiries = [
        KeyExpiry("partner_key_1", FPR_A, NOW + timedelta(days=10)),
        KeyExpiry("partner_key_1", FPR_B, NOW + timedelta(days=12)),
        KeyExpiry("our_key", FPR_C, NOW - timedelta(days=1)),
        KeyExpiry("partner_key_2", "D" * 40, NOW + timedelta(days=31)),
        KeyExpiry("partner_key_3", "E" * 40, None),
    ]
    alerts = key_expiry_alerts(_config(), expiries, now=NOW)  # 30 warning days

    by_title = {a.title: a for a in alerts}
    assert set(by_title) == {"partner_key_1 expires 2026-11-30", "our_key has expired"}
    partner = by_title["partner_key_1 expires 2026-11-30"]
    assert partner.severity is Severity.WARNING and partner.kind is AlertKind.KEY_EXPIRING
    assert f"{FPR_A} expires 2026-11-30 12:00 UTC (in 10 days)" in partner.text
    assert FPR_B in partner.text
    ours = by_title["our_key has expired"]
    assert ours.severity is Severity.CRITICAL
    assert f"{FPR_C} expired 2026-11-19 12:00 UTC" in ours.text


# -- payload and delivery ---------------------------------------------------------------


def test_payload_is_one_text_field_for_slack_and_teams() -> None:
    (alert,) = alerts_for_run(_report(_failed("decrypt", "unsigned")), _config())
    payload = webhook_payload(alert)
    assert list(payload) == ["text"]
    first, *rest = payload["text"].splitlines()
    assert first == (
        f"[CRITICAL] signature_or_decrypt_failed · acme_lab/lab_results: "
        f"{NAME} failed at decrypt: unsigned"
    )
    assert rest and json.loads(json.dumps(payload)) == payload


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as started:
        yield started


def _client(url: str, waits: list[float], **options: object) -> WebhookClient:
    return WebhookClient(SecretStr(url), sleep=waits.append, initial_wait=0.01, **options)  # type: ignore[arg-type]


def test_5xx_is_retried_until_accepted(receiver: WebhookReceiver) -> None:
    receiver.fail_next(2, 500)
    waits: list[float] = []
    with _client(receiver.url, waits) as client:
        assert client.post({"text": "hello"}) == 200
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert receiver.bodies == [{"text": "hello"}]
    assert len(waits) == 2


def test_429_waits_for_retry_after_within_the_cap(receiver: WebhookReceiver) -> None:
    receiver.fail_next(1, 429, retry_after="2")
    receiver.fail_next(1, 503, retry_after="600")
    waits: list[float] = []
    with _client(receiver.url, waits, max_retry_after=5.0) as client:
        assert client.post({"text": "x"}) == 200
    assert waits == [2.0, 5.0]


@pytest.mark.parametrize("status", [400, 403, 404, 301])
def test_other_answers_are_not_retried(receiver: WebhookReceiver, status: int) -> None:
    receiver.fail_next(1, status)
    waits: list[float] = []
    with _client(receiver.url, waits) as client, pytest.raises(AlertDeliveryError) as raised:
        client.post({"text": "x"})
    assert raised.value.reason == "alert_webhook_refused"
    assert f"HTTP {status}" in str(raised.value)
    assert len(receiver.requests) == 1 and waits == []
    assert receiver.path not in str(raised.value)  # the token stays out of errors


def test_unreachable_webhook_gives_up_after_max_attempts(receiver: WebhookReceiver) -> None:
    url = receiver.url
    receiver.stop()  # nothing listens on the port any more
    waits: list[float] = []
    with _client(url, waits, max_attempts=3) as client, pytest.raises(AlertDeliveryError) as raised:
        client.post({"text": "x"})
    assert raised.value.reason == "alert_webhook_unavailable"
    assert "ConnectError" in str(raised.value) and "gave up after 3 attempts" in str(raised.value)
    assert len(waits) == 2
    assert "/hooks/" not in str(raised.value)


def test_webhook_url_must_be_https_unless_loopback() -> None:
    assert check_webhook_url("https://hooks.slack.com/services/T/B/X").host == "hooks.slack.com"
    assert check_webhook_url("http://127.0.0.1:8080/hook").port == 8080
    assert check_webhook_url("http://localhost/hook").host == "localhost"
    for bad in ("http://hooks.example.org/T/secret", "ftp://x/y", "not a url", "https://"):
        with pytest.raises(ConfigError) as raised:
            check_webhook_url(bad)
        assert "secret" not in str(raised.value)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = _utc("2026-11-20T12:00")
    assert parse_retry_after("Fri, 20 Nov 2026 12:00:07 GMT", now=now) == 7.0
    assert parse_retry_after("Fri, 20 Nov 2026 11:00:00 GMT", now=now) == 0.0


def test_httpx_request_log_lines_do_not_show_the_token(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    with _client(receiver.url, []) as client:
        client.post({"text": "x"})
    assert "HTTP Request" in caplog.text
    assert receiver.path not in caplog.text and "<redacted>" in caplog.text


def _alerts(n: int) -> list[Alert]:
    return [
        Alert(AlertKind.FILE_FAILED, Severity.CRITICAL, "lab_results", "acme_lab", f"t{i}", "x")
        for i in range(n)
    ]


def test_without_a_webhook_alerts_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="batchbridge")
    summary = deliver_alerts(_alerts(2), _loaded(webhook=None))
    assert [(d.channel, d.delivered) for d in summary.deliveries] == [("log", True)] * 2
    assert caplog.text.count("alert file_failed [critical]") == 2


def test_delivery_posts_each_alert_and_logs_it(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
    caplog.set_level(logging.INFO, logger="batchbridge")
    summary = deliver_alerts(_alerts(3), _loaded())
    assert summary.counts() == {"alerts": 3, "alerts_undelivered": 0}
    assert [b["text"].split(": ", 1)[1].split("\n")[0] for b in receiver.bodies] == [
        "t0",
        "t1",
        "t2",
    ]
    assert caplog.text.count("sent to the feed's webhook (HTTP 200)") == 3
    assert receiver.path not in caplog.text


def test_many_alerts_are_capped_with_a_summary_message(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
    summary = deliver_alerts(_alerts(MAX_WEBHOOK_MESSAGES + 5), _loaded())
    assert summary.counts()["alerts_undelivered"] == 0
    assert len(receiver.bodies) == MAX_WEBHOOK_MESSAGES + 1
    assert "5 more alerts not sent one by one (file_failed x5)" in receiver.bodies[-1]["text"]


def test_missing_webhook_secret_is_recorded_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    summary = deliver_alerts(_alerts(1), _loaded())
    (delivery,) = summary.deliveries
    assert not delivery.delivered and f"env:{WEBHOOK_ENV}" in (delivery.error or "")
    assert "unusable" in caplog.text


def test_dead_webhook_is_tried_once_then_the_rest_are_skipped(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = receiver.url
    receiver.stop()
    attempts: list[float] = []

    def quick(loaded: LoadedFeed) -> WebhookClient:
        return _client(url, attempts, max_attempts=2)

    monkeypatch.setenv(WEBHOOK_ENV, url)
    summary = deliver_alerts(_alerts(4), _loaded(), open_sender=quick)
    assert summary.counts() == {"alerts": 4, "alerts_undelivered": 4}
    assert len(attempts) == 1  # one alert's retries; the other three were not attempted
    assert all("not attempted" in (d.error or "") for d in summary.deliveries[1:])


def test_refused_message_does_not_stop_the_next_ones(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
    receiver.fail_next(1, 400)
    summary = deliver_alerts(_alerts(2), _loaded())
    assert [d.delivered for d in summary.deliveries] == [False, True]


def test_alerting_never_raises_into_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(alerts: list[Alert], loaded: LoadedFeed) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(alerts_module, "send_alerts", broken)
    summary = alert_on_run(_report(_failed("decrypt", "unsigned")), _loaded())
    assert summary.counts() == {"alerts": 1, "alerts_undelivered": 1}


# -- command line ----------------------------------------------------------------------


def test_cli_refuses_a_bad_now_before_any_server_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["alerts", "check-arrivals", "lab_results", "--now", "garbage"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error [usage]:") and "ISO 8601" in err


def test_cli_test_alert_reaches_the_feeds_webhook(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACME_LAB_ALERT_WEBHOOK_URL", receiver.url)
    assert main(["alerts", "test", "lab_results", "--config-dir", str(FEEDS_DIR)]) == 0
    (body,) = receiver.bodies
    assert body["text"].startswith("[WARNING] test · acme_lab/lab_results: test alert")
    assert "HTTP 200" in capsys.readouterr().out


def test_cli_test_alert_exit_code_when_the_webhook_refuses(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACME_LAB_ALERT_WEBHOOK_URL", receiver.url)
    receiver.fail_next(1, 403)
    assert main(["alerts", "test", "lab_results", "--config-dir", str(FEEDS_DIR)]) == 12
    assert "alert_webhook_refused" in capsys.readouterr().err


def test_arrival_line_never_prints_none() -> None:
    from batchbridge.cli.alerts import arrival_line

    base = {"late": False, "kinds": [], "alerts": 0, "alerts_undelivered": 0}
    not_configured = arrival_line("lab_results", {**base, "deadline": None, "files_seen": None})
    not_due = arrival_line(
        "lab_results", {**base, "deadline": "2026-11-20T08:00:00-06:00", "files_seen": None}
    )
    late = arrival_line(
        "lab_results",
        {**base, "deadline": "x", "files_seen": 0, "late": True, "kinds": ["late_file"]},
    )
    assert "None" not in not_configured + not_due + late
    assert "no file expected today" in not_configured and "not due yet" in not_due
    assert "file LATE; files seen 0" in late and "(late_file)" in late
