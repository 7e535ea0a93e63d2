"""`batchbridge alerts check-arrivals|test`: late files and expiring keys; the webhook route."""

from __future__ import annotations

from typing import Annotated

import typer

from batchbridge.cli.output import print_json
from batchbridge.cli.params import ConfigDirOption, FeedArgument, JsonOption, QuietOption
from batchbridge.cli.prefect_env import ensure_prefect_home, prefect_api
from batchbridge.config import load_feed
from batchbridge.config.settings import load_settings
from batchbridge.errors import ConfigError
from batchbridge.monitoring.arrival_rules import parse_now

app = typer.Typer(help="Check arrival windows and keys; test alert routes.", no_args_is_help=True)


def _parse_now(value: str | None) -> str | None:
    try:
        parse_now(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def arrival_line(feed: str, result: dict[str, object]) -> str:
    """One line: late or not, files seen (when the window was due), alerts sent."""
    if result["deadline"] is None:
        state = "no file expected today (or no arrival window configured)"
    elif result["files_seen"] is None:
        state = f"not due yet (deadline {result['deadline']})"
    else:
        late = "LATE" if result["late"] else "on time"
        state = f"file {late}; files seen {result['files_seen']}"
    kinds = result["kinds"]
    shown = ", ".join(str(k) for k in kinds) if isinstance(kinds, list) and kinds else "none"
    return (
        f"feed {feed}: {state}; alerts {result['alerts']} ({shown}), "
        f"undelivered {result['alerts_undelivered']}"
    )


@app.command("check-arrivals")
def check_arrivals_command(
    feed: FeedArgument,
    config_dir: ConfigDirOption = None,
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="ISO 8601 time with offset to use instead of the clock (tests, backfills).",
            callback=_parse_now,
        ),
    ] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Alert when the feed's file is late for its window or a key nears expiry."""
    ensure_prefect_home()  # before Prefect first loads and reads it
    # The check is a Prefect flow: Prefect loads only for the commands that run one.
    from batchbridge.flows.arrivals import check_arrivals

    settings = load_settings(config_dir)
    load_feed(feed, settings.config_dir)  # a broken YAML fails here, before Prefect starts
    with prefect_api():
        result = check_arrivals(feed=feed, config_dir=str(settings.config_dir), now=now)
    if as_json:
        print_json(result)
    elif not quiet:
        print(arrival_line(feed, result))
    return 0


@app.command("test")
def test_command(feed: FeedArgument, config_dir: ConfigDirOption = None) -> int:
    """Post a test alert to the feed's webhook (exit 12 when it is not delivered)."""
    # The alert rules module holds Prefect tasks too: it loads only for this command.
    from batchbridge.monitoring.alert_delivery import open_webhook
    from batchbridge.monitoring.alert_rules import probe_alert, render_alert, webhook_payload

    settings = load_settings(config_dir)
    loaded = load_feed(feed, settings.config_dir)
    alert = probe_alert(loaded.config)
    sender = open_webhook(loaded)
    if sender is None:
        print(f"feed {feed} has no alerts.webhook: alerts are only logged")
        print(render_alert(alert))
        return ConfigError.exit_code
    try:
        status = sender.post(webhook_payload(alert))
    finally:
        sender.close()
    print(f"feed {feed}: test alert delivered ({alert.kind}, HTTP {status})")
    return 0
