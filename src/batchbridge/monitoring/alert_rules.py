"""Alert rules: what a run report, a missed arrival window or an ageing key should tell on-call.

Alert texts are built only from whitelisted facts: feed, tenant, run and file ids, file
names, stage names, reason codes, counts, `column:rule` reasons, key fingerprints and
dates. A FileReport's free-text `message` is never used: it is PHI-free by construction,
but an alert leaves our systems (a chat channel), so it gets the narrowest contract.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from batchbridge.config import FeedConfig
from batchbridge.ledger.run_report import FileReport, RunReport

logger = logging.getLogger(__name__)

#: Reason codes, stage names and `column:rule` reasons look like this; anything else is
#: replaced before it reaches an alert (a defence in depth, not an expected path).
_CODE = re.compile(r"^[A-Za-z0-9_.:\-]{1,120}$")
_FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{16,64}$")
TOP_REASONS = 5
#: Webhook messages per delivery; the rest are summed up in one more message, so a run
#: with hundreds of failed files does not flood a channel or hit its rate limit.
MAX_WEBHOOK_MESSAGES = 20


class AlertKind(StrEnum):
    """What happened. The value is a stable code, shown in every alert."""

    FILE_FAILED = "file_failed"
    COUNTS_UNBALANCED = "counts_unbalanced"
    SIGNATURE_OR_DECRYPT_FAILED = "signature_or_decrypt_failed"
    HOST_KEY_CHANGED = "host_key_changed"
    RUN_FAILED = "run_failed"
    QUARANTINE_RATE = "quarantine_rate"
    FILE_LATE = "file_late"
    KEY_EXPIRING = "key_expiring"
    TEST = "test"


class Severity(StrEnum):
    """critical: data did not arrive or was not loaded; warning: act before it breaks."""

    CRITICAL = "critical"
    WARNING = "warning"


@dataclass(frozen=True)
class Alert:
    """One alert: who it concerns, how bad, a short title and a few lines of facts."""

    kind: AlertKind
    severity: Severity
    feed: str
    tenant: str
    title: str
    text: str
    run_id: str | None = None
    file_name: str | None = None
    file_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (kind and severity as their codes)."""
        data = asdict(self)
        data["kind"] = str(self.kind)
        data["severity"] = str(self.severity)
        return data


def _code(value: object) -> str:
    text = str(value) if value is not None else "unknown"
    return text if _CODE.match(text) else "unrecognised"


def _count(value: int | None) -> str:
    return "-" if value is None else str(int(value))


# What on-call can do about each kind: the alert should be actionable without a search.
_ACTIONS: dict[AlertKind, str] = {
    AlertKind.FILE_FAILED: (
        "Nothing from the file was loaded and it is not marked done; fix the cause, then "
        "rerun the feed (the file is picked up again)."
    ),
    AlertKind.COUNTS_UNBALANCED: (
        "Rows were sent to a target but the counts did not balance; the file is not marked "
        "done. Check the target's load for this file id, then rerun (loads are upserts)."
    ),
    AlertKind.SIGNATURE_OR_DECRYPT_FAILED: (
        "The file was refused before it was read: it was not loaded. Ask the partner to "
        "resend it encrypted to our key and signed with their pinned key, or check our keys."
    ),
    AlertKind.HOST_KEY_CHANGED: (
        "The partner's SFTP server presented a host key that is not pinned; nothing was "
        "fetched. Confirm the new key with the partner out of band before pinning it."
    ),
    AlertKind.RUN_FAILED: "The run stopped before processing files; see the run's logs.",
    AlertKind.QUARANTINE_RATE: (
        "The valid rows were loaded; the quarantined rows wait for a data steward "
        "(`batchbridge quarantine list`)."
    ),
    AlertKind.FILE_LATE: (
        "The partner's file was expected by now; contact the partner. The nightly run will "
        "pick the file up once it is there."
    ),
    AlertKind.KEY_EXPIRING: (
        "Renew or replace the key and update the feed's key secret before it expires: "
        "files signed or encrypted with an expired key are refused."
    ),
    AlertKind.TEST: "A test message: the feed's alert route works.",
}


def _file_kind(file: FileReport) -> AlertKind:
    if file.reason == "host_key_mismatch":
        return AlertKind.HOST_KEY_CHANGED
    if file.failed_stage == "decrypt":
        return AlertKind.SIGNATURE_OR_DECRYPT_FAILED
    if file.reason == "counts_unbalanced":
        return AlertKind.COUNTS_UNBALANCED
    return AlertKind.FILE_FAILED


def _run_facts(report: RunReport) -> str:
    rerun = " (rerun)" if report.is_rerun else ""
    return f"run {_code(report.run_id)}{rerun}"


def _failed_file_alert(report: RunReport, file: FileReport) -> Alert:
    kind = _file_kind(file)
    stage, reason = _code(file.failed_stage), _code(file.reason)
    counts = (
        f"Rows read {_count(file.rows_read)}, valid {_count(file.rows_valid)}, "
        f"quarantined {_count(file.rows_quarantined)}"
        if file.rows_read is not None
        else "No rows read"
    )
    lines = [
        f"Stage: {stage}. Reason: {reason}. {counts}.",
        _ACTIONS[kind],
        f"{_run_facts(report)}, file id {_code(file.file_id)}",
    ]
    return Alert(
        kind=kind,
        severity=Severity.CRITICAL,
        feed=report.feed,
        tenant=report.tenant,
        title=f"{file.name} failed at {stage}: {reason}",
        text="\n".join(lines),
        run_id=report.run_id,
        file_name=file.name,
        file_id=file.file_id,
    )


def _run_error_alert(report: RunReport, error: dict[str, str]) -> Alert:
    reason = _code(error.get("reason"))
    stage = _code(error.get("stage"))
    kind = AlertKind.HOST_KEY_CHANGED if reason == "host_key_mismatch" else AlertKind.RUN_FAILED
    title = (
        "SFTP host key changed: connection refused"
        if kind is AlertKind.HOST_KEY_CHANGED
        else f"run failed at {stage}: {reason}"
    )
    return Alert(
        kind=kind,
        severity=Severity.CRITICAL,
        feed=report.feed,
        tenant=report.tenant,
        title=title,
        text="\n".join([f"Stage: {stage}. Reason: {reason}.", _ACTIONS[kind], _run_facts(report)]),
        run_id=report.run_id,
    )


def quarantine_rate(file: FileReport) -> float | None:
    """quarantined / read for a file that was validated; None before that."""
    if not file.rows_read or file.rows_quarantined is None:
        return None
    return file.rows_quarantined / file.rows_read


def _quarantine_alert(report: RunReport, file: FileReport, rate: float, limit: float) -> Alert:
    top = sorted(file.quarantine_reasons.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{_code(reason)} x{int(count)}" for reason, count in top[:TOP_REASONS])
    more = f" (+{len(top) - TOP_REASONS} more reasons)" if len(top) > TOP_REASONS else ""
    lines = [
        f"Quarantined {_count(file.rows_quarantined)} of {_count(file.rows_read)} rows "
        f"({rate:.1%}; threshold {limit:.1%}).",
        f"Top reasons: {shown or 'none recorded'}{more}.",
        _ACTIONS[AlertKind.QUARANTINE_RATE],
        f"{_run_facts(report)}, file id {_code(file.file_id)}",
    ]
    return Alert(
        kind=AlertKind.QUARANTINE_RATE,
        severity=Severity.WARNING,
        feed=report.feed,
        tenant=report.tenant,
        title=f"{file.name}: {rate:.1%} of rows quarantined",
        text="\n".join(lines),
        run_id=report.run_id,
        file_name=file.name,
        file_id=file.file_id,
    )


def alerts_for_run(report: RunReport, feed_config: FeedConfig) -> list[Alert]:
    """Every alert a finished run raises, most severe first.

    One alert per failed file, of its most specific kind (host key, decrypt/signature,
    counts, else file_failed), so one broken file pages once; one per run-level error;
    one per file whose quarantine rate exceeds the feed's threshold.
    """
    alerts: list[Alert] = []
    if report.error is not None:
        alerts.append(_run_error_alert(report, report.error))
    alerts += [_failed_file_alert(report, f) for f in report.failed_files]
    limit = feed_config.alerts.quarantine_rate_threshold
    for file in report.files:
        rate = quarantine_rate(file)
        if rate is not None and rate > limit:
            alerts.append(_quarantine_alert(report, file, rate, limit))
    return sorted(alerts, key=lambda a: a.severity is not Severity.CRITICAL)


def late_file_alert(
    feed_config: FeedConfig,
    *,
    deadline: datetime,
    checked_at: datetime,
    source_problem: str | None = None,
) -> Alert:
    """The partner's file did not arrive by the arrival window's deadline (a local time)."""
    lines = [
        f"No file for {feed_config.feed} by {deadline:%Y-%m-%d %H:%M %Z} "
        f"(checked {checked_at.astimezone(deadline.tzinfo):%H:%M %Z}): "
        "none on the server, none seen by a run since local midnight.",
    ]
    if source_problem is not None:
        lines.append(
            f"The server could not be listed ({_code(source_problem)}): judged from the "
            "ledger alone."
        )
    lines.append(_ACTIONS[AlertKind.FILE_LATE])
    return Alert(
        kind=AlertKind.FILE_LATE,
        severity=Severity.CRITICAL,
        feed=feed_config.feed,
        tenant=feed_config.tenant,
        title=f"file late: expected by {deadline:%H:%M %Z} on {deadline:%a %Y-%m-%d}",
        text="\n".join(lines),
    )


@dataclass(frozen=True)
class KeyExpiry:
    """When one part (primary or subkey) of a configured key expires; None = never.

    `label` names the configured key as a code: `partner_key_1`, `our_key`.
    """

    label: str
    fingerprint: str
    expires_at: datetime | None


def key_expiry_alerts(
    feed_config: FeedConfig, expiries: Sequence[KeyExpiry], *, now: datetime
) -> list[Alert]:
    """One alert per configured key (label) with a part expired or within the warning days."""
    horizon = now + timedelta(days=feed_config.pgp.key_expiry_warning_days)
    by_label: dict[str, list[KeyExpiry]] = {}
    for expiry in expiries:
        if expiry.expires_at is not None and expiry.expires_at <= horizon:
            by_label.setdefault(expiry.label, []).append(expiry)
    alerts: list[Alert] = []
    for label, parts in by_label.items():
        parts.sort(key=lambda p: p.expires_at or now)
        first = parts[0].expires_at
        assert first is not None
        expired = first <= now
        lines = []
        for part in parts:
            assert part.expires_at is not None
            fpr = part.fingerprint if _FINGERPRINT.match(part.fingerprint) else "unrecognised"
            days = (part.expires_at - now).total_seconds() / 86400
            when = (
                f"expired {part.expires_at:%Y-%m-%d %H:%M} UTC"
                if part.expires_at <= now
                else f"expires {part.expires_at:%Y-%m-%d %H:%M} UTC (in {days:.0f} days)"
            )
            lines.append(f"{fpr} {when}")
        lines.append(_ACTIONS[AlertKind.KEY_EXPIRING])
        title_when = "has expired" if expired else f"expires {first:%Y-%m-%d}"
        alerts.append(
            Alert(
                kind=AlertKind.KEY_EXPIRING,
                severity=Severity.CRITICAL if expired else Severity.WARNING,
                feed=feed_config.feed,
                tenant=feed_config.tenant,
                title=f"{_code(label)} {title_when}",
                text="\n".join(lines),
            )
        )
    return alerts


def probe_alert(feed_config: FeedConfig) -> Alert:
    """A harmless message to prove a feed's alert route end to end."""
    return Alert(
        kind=AlertKind.TEST,
        severity=Severity.WARNING,
        feed=feed_config.feed,
        tenant=feed_config.tenant,
        title="test alert from batchbridge",
        text=_ACTIONS[AlertKind.TEST],
    )


def render_alert(alert: Alert) -> str:
    """The message text: severity, kind, tenant/feed, title, then the facts."""
    head = f"[{alert.severity.upper()}] {alert.kind} · {alert.tenant}/{alert.feed}: {alert.title}"
    return f"{head}\n{alert.text}"


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """JSON body for a Slack or Teams incoming webhook: both render a top-level `text`.

    Slack `blocks` are left out on purpose: Teams' connectors expect a MessageCard and
    the plain `text` is the one field both sides document.
    """
    return {"text": render_alert(alert)}


def summary_payload(alerts: Sequence[Alert]) -> dict[str, Any]:
    """One message standing for alerts beyond MAX_WEBHOOK_MESSAGES: counts by kind."""
    counts: dict[str, int] = {}
    for alert in alerts:
        counts[str(alert.kind)] = counts.get(str(alert.kind), 0) + 1
    first = alerts[0]
    listed = ", ".join(f"{kind} x{n}" for kind, n in sorted(counts.items()))
    return {
        "text": f"[{first.severity.upper()}] {first.tenant}/{first.feed}: "
        f"{len(alerts)} more alerts not sent one by one ({listed}); see the run's alerts artifact."
    }
