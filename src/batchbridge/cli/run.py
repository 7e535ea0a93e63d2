"""`batchbridge run FEED`: one run of a feed's flow, checked offline first, its report printed."""

from __future__ import annotations

from typing import Annotated

import typer

from batchbridge.cli.output import print_json, wants_progress
from batchbridge.cli.params import (
    ConfigDirOption,
    FeedArgument,
    JsonOption,
    QuietOption,
    split_values,
)
from batchbridge.cli.prefect_env import ensure_prefect_home, prefect_api
from batchbridge.config import load_feed
from batchbridge.config.settings import Settings, load_settings
from batchbridge.errors import BatchbridgeError, RunFailedError
from batchbridge.ledger.models import RunStatus
from batchbridge.ledger.run_report import RunReport, render_text
from batchbridge.ledger.store import LedgerStore


def run_feed_once(
    feed: str,
    settings: Settings,
    *,
    files: list[str] | None,
    force: bool,
    show_progress: bool = False,
) -> tuple[RunReport, str]:
    """Run the nightly flow once in this process; the report and the run's final status.

    The flow run carries the tags a deployed run of the feed carries (`tenant:<t>`,
    `feed:<f>`), so the Prefect UI finds CLI runs beside scheduled ones.
    """
    ensure_prefect_home()  # before Prefect first loads and reads it
    # Prefect (and Polars, through the flow's tasks) load only for commands that run flows.
    from prefect import tags

    from batchbridge.cli.progress_display import terminal_progress  # rich.progress: runs only
    from batchbridge.flows.nightly import nightly_feed

    config = load_feed(feed, settings.config_dir).config
    run_tags = (f"tenant:{config.tenant}", f"feed:{config.feed}")
    with prefect_api(), terminal_progress(show_progress), tags(*run_tags):
        state = nightly_feed(
            feed=feed,
            config_dir=str(settings.config_dir),
            files=files,
            force=force,
            return_state=True,
        )
    store = LedgerStore.open_existing(settings.database_url)
    try:
        run = store.run_for_flow_run(str(state.state_details.flow_run_id))
        if run is None or run.report is None:
            raise BatchbridgeError(
                f"the run of {feed} ended before writing a report ({state.type.value.lower()})"
            )
        return RunReport.from_dict(run.report), run.status
    finally:
        store.engine.dispose()


def run_feed_command(
    feed: FeedArgument,
    config_dir: ConfigDirOption = None,
    files: Annotated[
        list[str] | None,
        typer.Option(
            "--file",
            help="Only these remote files (repeat, or comma-separate).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Reprocess files already done.")] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Run one feed once (a Prefect flow run) and print its report."""
    # The offline checks read mapping tables with Polars: loaded by flow commands only.
    from batchbridge.monitoring.preflight import require_ready

    settings = load_settings(config_dir)
    require_ready(load_feed(feed, settings.config_dir))
    report, status = run_feed_once(
        feed,
        settings,
        files=split_values(files) or None,
        force=force,
        show_progress=wants_progress(quiet=quiet, as_json=as_json),
    )
    failed = status != RunStatus.SUCCEEDED
    if as_json:
        print_json(report.to_dict())
    elif not quiet or failed:
        print(render_text(report))
    return RunFailedError.exit_code if failed else 0
