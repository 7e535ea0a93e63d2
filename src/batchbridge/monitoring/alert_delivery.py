"""Alert delivery: log every alert, post it to the feed's webhook, record what got through."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchbridge.config import LoadedFeed
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.webhook import WebhookClient, WebhookSender
from batchbridge.errors import AlertDeliveryError, BatchbridgeError
from batchbridge.monitoring.alert_rules import (
    MAX_WEBHOOK_MESSAGES,
    Alert,
    Severity,
    summary_payload,
    webhook_payload,
)

logger = logging.getLogger(__name__)


@dataclass
class AlertDelivery:
    """What became of one alert: which channel took it, or why it did not get through."""

    alert: Alert
    channel: str
    delivered: bool
    error: str | None = None


@dataclass
class DeliverySummary:
    """Alerts of one call and their outcomes (what the flows return and log)."""

    deliveries: list[AlertDelivery] = field(default_factory=list)

    @property
    def undelivered(self) -> list[AlertDelivery]:
        return [d for d in self.deliveries if not d.delivered]

    def counts(self) -> dict[str, int]:
        """Alerts raised and alerts the webhook did not take (names only, no texts)."""
        return {"alerts": len(self.deliveries), "alerts_undelivered": len(self.undelivered)}


SenderFactory = Callable[[LoadedFeed], WebhookSender | None]


def open_webhook(loaded: LoadedFeed) -> WebhookSender | None:
    """The feed's webhook client, its URL resolved from the secret now; None without one."""
    ref = loaded.config.alerts.webhook
    if ref is None:
        return None
    return WebhookClient(resolve_secret(ref, base_dir=loaded.base_dir))


def deliver_alerts(
    alerts: Sequence[Alert],
    loaded: LoadedFeed,
    *,
    open_sender: SenderFactory = open_webhook,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] = logger,
) -> DeliverySummary:
    """Log every alert, post it to the feed's webhook when there is one.

    Delivery problems (no secret, bad URL, refused, unreachable) are recorded, not raised.

    Without a webhook the log line (and, in a flow, the alerts artifact) is the channel.
    A webhook that cannot be reached is logged and recorded per alert; after the first
    message that exhausted its retries the rest are not attempted, so a dead webhook
    does not hold the run for minutes.
    """
    summary = DeliverySummary()
    if not alerts:
        return summary
    for alert in alerts:
        level = logging.ERROR if alert.severity is Severity.CRITICAL else logging.WARNING
        log.log(level, "alert %s [%s]: %s", alert.kind, alert.severity, alert.title)

    sender: WebhookSender | None = None
    setup_error: str | None = None
    if loaded.config.alerts.webhook is not None:
        try:
            sender = open_sender(loaded)
        except BatchbridgeError as exc:
            setup_error = f"[{exc.reason}] {exc}"
            log.error("alert webhook %s unusable: %s", loaded.config.alerts.webhook, setup_error)
    if sender is None:
        summary.deliveries = [
            AlertDelivery(alert, "log", delivered=setup_error is None, error=setup_error)
            for alert in alerts
        ]
        return summary

    one_by_one, rest = list(alerts[:MAX_WEBHOOK_MESSAGES]), list(alerts[MAX_WEBHOOK_MESSAGES:])
    batches: list[tuple[list[Alert], dict[str, Any]]] = [
        ([a], webhook_payload(a)) for a in one_by_one
    ]
    if rest:
        batches.append((rest, summary_payload(rest)))
    given_up: str | None = None
    try:
        for batch, payload in batches:
            if given_up is not None:
                summary.deliveries += [
                    AlertDelivery(a, "webhook", delivered=False, error=given_up) for a in batch
                ]
                continue
            try:
                status = sender.post(payload)
            except AlertDeliveryError as exc:
                error = f"[{exc.reason}] {exc}"
                log.error("alert %s not delivered: %s", batch[0].kind, error)
                summary.deliveries += [
                    AlertDelivery(a, "webhook", delivered=False, error=error) for a in batch
                ]
                if exc.reason == "alert_webhook_unavailable":
                    given_up = f"not attempted: the webhook was unavailable ({error})"
                continue
            for alert in batch:
                log.info("alert %s sent to the feed's webhook (HTTP %s)", alert.kind, status)
            summary.deliveries += [AlertDelivery(a, "webhook", delivered=True) for a in batch]
    finally:
        sender.close()
    return summary


def render_alerts_markdown(feed: str, summary: DeliverySummary) -> str:
    """The alerts artifact: one row per alert with its delivery outcome."""
    rows = [
        f"# {feed}: {len(summary.deliveries)} alert(s)",
        "",
        "| severity | kind | title | file | channel | delivered |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for d in summary.deliveries:
        a = d.alert
        outcome = "yes" if d.delivered else f"no: {d.error or ''}"
        rows.append(
            f"| {a.severity} | {a.kind} | {a.title} | {a.file_name or ''} | {d.channel} | "
            f"{outcome} |"
        )
    return "\n".join(rows)


def alerts_artifact_key(feed: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return f"{feed.replace('_', '-')}-alerts"
