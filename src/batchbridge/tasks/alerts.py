"""Alerts stage: deliver a run's alerts and publish them as a Prefect artifact."""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError

from batchbridge.config import LoadedFeed
from batchbridge.ledger.run_report import RunReport
from batchbridge.monitoring.alert_delivery import (
    AlertDelivery,
    DeliverySummary,
    alerts_artifact_key,
    deliver_alerts,
    render_alerts_markdown,
)
from batchbridge.monitoring.alert_rules import Alert, alerts_for_run
from batchbridge.tasks.guard import stage_task

logger = logging.getLogger(__name__)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger inside a flow or task (logs reach the UI), else ours."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logger


def _in_prefect_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


@stage_task("alerts")
def send_alerts(alerts: list[Alert], loaded: LoadedFeed) -> DeliverySummary:
    """Deliver alerts and, in a Prefect run, publish them as a markdown artifact."""
    summary = deliver_alerts(alerts, loaded, log=_run_logger())
    if summary.deliveries and _in_prefect_run():
        create_markdown_artifact(
            markdown=render_alerts_markdown(loaded.config.feed, summary),
            key=alerts_artifact_key(loaded.config.feed),
            description=f"{loaded.config.feed}: alerts raised and their delivery (no PHI)",
        )
    return summary


def alert_on_run(report: RunReport, loaded: LoadedFeed) -> DeliverySummary:
    """Raise a finished run's alerts; an alerting failure is logged, never raised.

    Alerting must not change a run's outcome or hide its report: the report is already
    stored and published when this runs.
    """
    alerts: list[Alert] = []
    try:
        alerts = alerts_for_run(report, loaded.config)
        summary: DeliverySummary = send_alerts(alerts, loaded)
        return summary
    except Exception as exc:
        # The class only: alerting code handles no patient data, but stay on the safe side.
        _run_logger().error(
            "alerting for run %s failed with %s; %d alert(s) not sent",
            report.run_id,
            type(exc).__name__,
            len(alerts),
        )
        return DeliverySummary(
            [AlertDelivery(a, "none", delivered=False, error=type(exc).__name__) for a in alerts]
        )
