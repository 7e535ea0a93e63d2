"""`batchbridge health [FEED]`: run the checks in-process (no Prefect API) and print them."""

from __future__ import annotations

from pathlib import Path

from batchbridge.config import list_feeds
from batchbridge.errors import ConfigError, FeedNotFoundError
from batchbridge.settings import load_settings
from batchbridge.tasks.health_checks import run_feed_checks
from batchbridge.tasks.health_report import render_health_text

HEALTH_FAILED_EXIT = 1
"""`batchbridge health` exit code when a check failed (warnings exit 0)."""


def health_command(feed: str | None, *, config_dir: Path | None, as_json: bool) -> int:
    """Run the checks of one feed (or all) without Prefect; exit 1 when a check failed."""
    from batchbridge.flows.cli import print_json

    settings = load_settings(config_dir)
    feeds = [feed] if feed else list_feeds(settings.config_dir)
    if feed and not (settings.config_dir / f"{feed}.yaml").is_file():
        known = ", ".join(list_feeds(settings.config_dir)) or "none"
        raise FeedNotFoundError(f"no feed {feed!r} in {settings.config_dir} (known: {known})")
    if not feeds:
        raise ConfigError(f"no feed YAMLs in {settings.config_dir}")
    results = [run_feed_checks(name, settings.config_dir) for name in feeds]
    if as_json:
        print_json([health.to_dict() for health in results])
    else:
        print("\n\n".join(render_health_text(health) for health in results))
    return HEALTH_FAILED_EXIT if any(health.failed for health in results) else 0
