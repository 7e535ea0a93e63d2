"""The daily health-check flow of a feed, its Prefect artifact and its deployment entry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from batchbridge.errors import HealthCheckError
from batchbridge.settings import load_settings
from batchbridge.tasks.health_checks import FeedHealth, run_feed_checks
from batchbridge.tasks.health_report import STATUS_WORD, health_artifact_key, render_health_markdown


@task(name="health-checks", cache_policy=NONE, persist_result=False, retries=0)
def run_health_checks(feed: str, config_dir: str) -> FeedHealth:
    """Every check of one feed (connectors retry their own transient errors)."""
    return run_feed_checks(feed, Path(config_dir))


@task(name="health-report", cache_policy=NONE, persist_result=False, retries=0)
def publish_health_artifact(health: FeedHealth) -> None:
    """Attach the table of checks to the flow run."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        markdown=render_health_markdown(health),
        key=health_artifact_key(health.feed),
        description=f"{health.feed}: daily health check (hosts, fingerprints, counts; no PHI)",
    )


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
