"""`batchbridge health [FEED]`: a feed's checks, run here (no Prefect API), printed."""

from __future__ import annotations

from typing import Annotated

import typer

from batchbridge.cli.output import print_json
from batchbridge.cli.params import ConfigDirOption, JsonOption, QuietOption
from batchbridge.config import list_feeds, load_feed
from batchbridge.config.settings import load_settings
from batchbridge.errors import ConfigError, HealthCheckError


def health_command(
    feed: Annotated[
        str | None, typer.Argument(help="Feed to check (default: every feed).", show_default=False)
    ] = None,
    config_dir: ConfigDirOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Check feeds can run tonight: host keys, logins, PGP keys, targets (exit 14 on failure)."""
    # The checks log in to partners and targets: paramiko and the drivers load only here.
    from batchbridge.monitoring.health_checks import run_feed_checks
    from batchbridge.monitoring.health_report import render_health_text

    settings = load_settings(config_dir)
    if feed:
        load_feed(feed, settings.config_dir)  # an unknown feed fails here, naming the known
        feeds = [feed]
    else:
        feeds = list_feeds(settings.config_dir)
    if not feeds:
        raise ConfigError(f"no feed YAMLs in {settings.config_dir}")
    results = [run_feed_checks(name, settings.config_dir) for name in feeds]
    failed = any(health.failed for health in results)
    if as_json:
        print_json([health.to_dict() for health in results])
    elif not quiet or failed:
        print("\n\n".join(render_health_text(health) for health in results))
    return HealthCheckError.exit_code if failed else 0
