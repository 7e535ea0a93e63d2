"""The daily health-check flow of a feed, its Prefect artifact and its deployment entry."""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger

from batchbridge.config.settings import load_settings
from batchbridge.errors import HealthCheckError
from batchbridge.monitoring.health_report import STATUS_WORD
from batchbridge.tasks.health import publish_health_artifact, run_health_checks


@flow(name="health-check", flow_run_name="{feed} health", log_prints=False, persist_result=False)
def health_check(feed: str, config_dir: str | None = None) -> dict[str, Any]:
    """Check that tonight's run of `feed` can work; fails when a check failed.

    Warnings (a key expiring within `pgp.key_expiry_warning_days`) do not fail the run.
    """
    log = get_run_logger()
    settings = load_settings(config_dir)
    health = run_health_checks(feed, str(settings.config_dir))
    publish_health_artifact(health)
    for check in health.checks:
        level = {"error": logging.ERROR, "warning": logging.WARNING}.get(
            check.severity, logging.INFO
        )
        log.log(level, "%s %s: %s", STATUS_WORD[check.severity], check.name, check.detail)
    if health.failed:
        names = ", ".join(c.name for c in health.failed)
        raise HealthCheckError(f"feed {feed}: {len(health.failed)} health check(s) failed: {names}")
    return health.to_dict()
