"""What the CLI's feed commands do: run a feed, check a feed, list feeds."""

from __future__ import annotations

from pathlib import Path

from batchbridge.config import FeedConfig, LoadedFeed, list_feeds, load_feed
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.errors import BatchbridgeError, ConfigError, RunFailedError
from batchbridge.ledger.models import RunStatus
from batchbridge.ledger.store import LedgerStore
from batchbridge.settings import load_settings
from batchbridge.tasks.report import RunReport, render_text
from batchbridge.validations.registry import get_schema


def run_command(
    feed: str,
    *,
    config_dir: Path | None,
    files: list[str] | None,
    force: bool,
    as_json: bool,
) -> int:
    """Run the nightly flow once for `feed` and print its report."""
    from batchbridge.flows.cli import print_json
    from batchbridge.flows.nightly import nightly_feed

    settings = load_settings(config_dir)
    load_feed(feed, settings.config_dir)  # a broken YAML fails here, before Prefect starts
    state = nightly_feed(
        feed=feed,
        config_dir=str(settings.config_dir),
        files=files,
        force=force,
        return_state=True,
    )
    store = LedgerStore.from_url(settings.database_url)
    run = store.run_for_flow_run(str(state.state_details.flow_run_id))
    if run is None or run.report is None:
        raise BatchbridgeError(f"the run of {feed} ended before writing a report: {state.message}")
    report = RunReport.from_dict(run.report)
    if as_json:
        print_json(report.to_dict())
    else:
        print(render_text(report))
    return 0 if run.status == RunStatus.SUCCEEDED else RunFailedError.exit_code


def secret_references(config: FeedConfig) -> list[str]:
    """Every secret reference a feed uses, in the order they appear."""
    refs: list[str] = []
    source = config.source
    if source.kind == "sftp":
        refs.append(source.private_key)
        if source.private_key_passphrase:
            refs.append(source.private_key_passphrase)
    refs.append(config.pgp.private_key)
    if config.pgp.passphrase:
        refs.append(config.pgp.passphrase)
    refs += config.pgp.partner_public_keys
    refs += [config.pseudonym_key, config.quarantine_key]
    refs += [t.url for t in config.targets if t.kind == "postgres"]
    return refs


def check_feed(loaded: LoadedFeed, *, resolve_secrets: bool) -> list[str]:
    """Problems that would stop a run, without running it (empty list: ready)."""
    from batchbridge.flows.nightly import load_feed_mappings

    problems: list[str] = []
    config = loaded.config
    schema = get_schema(config.schema_name)
    try:
        load_feed_mappings(loaded, schema)
    except ConfigError as exc:
        problems.append(str(exc))
    produced = set(schema.output_columns) | set(schema.natural_key)
    for target in config.targets:
        unknown = [c for c in target.columns if c not in produced]
        if unknown:
            problems.append(f"target {target.name}: unknown columns {', '.join(unknown)}")
    if resolve_secrets:
        for ref in secret_references(config):
            try:
                resolve_secret(ref, base_dir=loaded.base_dir)
            except ConfigError as exc:
                problems.append(str(exc))
    return problems


def check_feed_command(feed: str, *, config_dir: Path | None) -> int:
    """Print whether a feed is ready to run; exit 2 when it is not."""
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


def list_feeds_command(*, config_dir: Path | None) -> int:
    """Print every feed in the config folder with its tenant and schedule."""
    settings = load_settings(config_dir)
    for name in list_feeds(settings.config_dir):
        config = load_feed(name, settings.config_dir).config
        schedule = config.schedule.cron if config.schedule else "unscheduled"
        print(f"{name:<24} tenant {config.tenant:<16} schema {config.schema_name:<16} {schedule}")
    return 0
