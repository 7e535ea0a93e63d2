"""`batchbridge feeds list|check`: what feeds there are, and whether one is ready to run."""

from __future__ import annotations

import typer

from batchbridge.cli.output import note
from batchbridge.cli.params import ConfigDirOption, FeedArgument
from batchbridge.config import list_feeds, load_feed
from batchbridge.config.settings import load_settings
from batchbridge.errors import ConfigError

app = typer.Typer(help="Inspect feed configurations.", no_args_is_help=True)


@app.command("list")
def list_command(config_dir: ConfigDirOption = None) -> int:
    """List the feeds in the config folder with tenant, schema and schedule."""
    settings = load_settings(config_dir)
    names = list_feeds(settings.config_dir)
    if not names:
        note(f"no feed YAMLs in {settings.config_dir}")
    for name in names:
        config = load_feed(name, settings.config_dir).config
        schedule = config.schedule.cron if config.schedule else "unscheduled"
        print(f"{name:<24} tenant {config.tenant:<16} schema {config.schema_name:<16} {schedule}")
    return 0


@app.command("check")
def check_command(feed: FeedArgument, config_dir: ConfigDirOption = None) -> int:
    """Validate a feed without running it: YAML, schema, mappings, targets, secrets, keys."""
    # Mapping tables are read with Polars and schemas with pandera: loaded for this check.
    from batchbridge.monitoring.preflight import check_feed

    settings = load_settings(config_dir)
    loaded = load_feed(feed, settings.config_dir)
    problems = check_feed(loaded, resolve_secrets=True)
    if problems:
        print(f"feed {feed}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return ConfigError.exit_code
    config = loaded.config
    print(
        f"feed {feed}: ok (tenant {config.tenant}, schema {config.schema_name}, "
        f"source {config.source.kind}, engine {config.pgp.engine}, "
        f"targets {', '.join(t.name for t in config.targets)})"
    )
    return 0
