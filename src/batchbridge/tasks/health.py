"""Health stage tasks: run a feed's checks, publish their table as a Prefect artifact."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from batchbridge.monitoring.health_checks import FeedHealth, run_feed_checks
from batchbridge.monitoring.health_report import health_artifact_key, render_health_markdown


@task(name="health-checks", cache_policy=NONE, persist_result=False, retries=0)
def run_health_checks(feed: str, config_dir: str) -> FeedHealth:
    """Every check of one feed (connectors retry their own transient errors)."""
    return run_feed_checks(feed, Path(config_dir))


@task(name="health-report", cache_policy=NONE, persist_result=False, retries=0)
def publish_health_artifact(health: FeedHealth) -> None:
    """Attach the table of checks to the flow run."""
    create_markdown_artifact(
        markdown=render_health_markdown(health),
        key=health_artifact_key(health.feed),
        description=f"{health.feed}: daily health check (hosts, fingerprints, counts; no PHI)",
    )
