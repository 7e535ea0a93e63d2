"""Report stage: publish a run's report to Prefect as markdown and table artifacts; no PHI."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, urlsplit

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from batchbridge.crashpoints import crash_point
from batchbridge.ledger.run_report import RunReport, show_command
from batchbridge.ledger.run_report import format_count as fmt
from batchbridge.steward.release_report import ReleaseReport, render_release_markdown
from batchbridge.tasks.guard import stage_task

WORKBENCH_URL_ENV = "BATCHBRIDGE_WORKBENCH_URL"
"""Where stewards reach the workbench (its public https URL); unset: no link in the report."""


def workbench_queue_url(run_id: str, base_url: str | None = None) -> str | None:
    """The workbench queue filtered by this run: ids only, so no PHI reaches a URL.

    `base_url` defaults to $BATCHBRIDGE_WORKBENCH_URL; None when neither is set, or when
    it is not an http(s) URL (a typo must not become a link to somewhere else).
    """
    base = (base_url if base_url is not None else os.environ.get(WORKBENCH_URL_ENV, "")).strip()
    if not base or urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
        return None
    return f"{base.rstrip('/')}/queue?run={quote(run_id, safe='')}"


def render_markdown(report: RunReport, workbench_url: str | None = None) -> str:
    """The Prefect artifact: a summary line, a table per file, reasons.

    `workbench_url` overrides $BATCHBRIDGE_WORKBENCH_URL (tests).
    """
    header = f"# {report.feed} run `{report.run_id}`: **{report.status}**" + (
        " (rerun)" if report.is_rerun else ""
    )
    rows = [
        "| file | outcome | rerun | read | declared | valid | quarantined | loaded | reason |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for f in report.files:
        loaded = sum(t.confirmed for t in f.targets.values()) if f.targets else None
        rows.append(
            f"| {f.name} | {f.outcome} | {'yes' if f.is_rerun else ''} | {fmt(f.rows_read)} | "
            f"{fmt(f.rows_declared)} | {fmt(f.rows_valid)} | {fmt(f.rows_quarantined)} | "
            f"{fmt(loaded)} | {f.reason or ''} |"
        )
    for name, why in report.skipped.items():
        rows.append(f"| {name} | skipped |  |  |  |  |  |  | {why} |")
    reasons = [
        f"- `{f.name}`: {count} x `{reason}`"
        for f in report.files
        for reason, count in f.quarantine_reasons.items()
    ]
    failures = [
        f"- `{f.name}` failed at **{f.failed_stage}**: `{f.reason}` — {f.message}"
        for f in report.failed_files
    ]
    reasons += [
        f"- `{f.name}`: {count} x rejected by `{name}`: `{reason}`"
        for f in report.files
        for name, t in f.targets.items()
        for reason, count in t.rejection_reasons.items()
    ]
    totals = ", ".join(f"{k} {v}" for k, v in report.totals().items())
    # The way back from the Prefect UI to the ledger: the run's id and the command.
    ledger = f"Ledger run `{report.run_id}`: `{show_command(report.run_id)}` shows every stage."
    parts = [header, "", ledger, "", f"Totals: {totals}", "", *rows]
    queue = workbench_queue_url(report.run_id, workbench_url)
    if queue and any(f.rows_quarantined for f in report.files):
        # The way on for the rows this run quarantined: the steward workbench's queue.
        parts[4:4] = [f"Quarantined rows of this run: [steward workbench queue]({queue})", ""]
    if report.notes:
        parts += ["", *(f"> {note}" for note in report.notes)]
    if report.error:
        failures.insert(
            0,
            f"- run failed at **{report.error['stage']}**: `{report.error['reason']}` — "
            f"{report.error['message']}",
        )
    if failures:
        parts += ["", "## Failures", *failures]
    if reasons:
        parts += ["", "## Quarantine and rejection reasons", *reasons]
    return "\n".join(parts)


def report_table(report: RunReport) -> list[dict[str, Any]]:
    """One row per file for a Prefect table artifact."""
    return [
        {
            "file": f.name,
            "outcome": f.outcome,
            "rerun": f.is_rerun,
            "read": f.rows_read,
            "declared": f.rows_declared,
            "valid": f.rows_valid,
            "quarantined": f.rows_quarantined,
            "loaded": sum(t.confirmed for t in f.targets.values()) if f.targets else None,
            "failed_stage": f.failed_stage,
            "reason": f.reason,
        }
        for f in report.files
    ] + [
        {"file": name, "outcome": "skipped", "reason": why} for name, why in report.skipped.items()
    ]


def artifact_key(feed: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return f"{feed.replace('_', '-')}-run-report"


@stage_task("report")
def publish_report_artifact(report: RunReport) -> None:
    """Attach the report to the flow run as a markdown artifact (counts only)."""
    create_table_artifact(
        table=report_table(report),
        key=f"{artifact_key(report.feed)}-files",
        description=(
            f"{report.feed} run `{report.run_id}` (`{show_command(report.run_id)}`): "
            "one row per file (counts, outcome, reason; no PHI)"
        ),
    )
    crash_point("mid_artifact")
    create_markdown_artifact(
        markdown=render_markdown(report),
        key=artifact_key(report.feed),
        description=(
            f"{report.feed} run `{report.run_id}` report: counts, states and reasons (no PHI)"
        ),
    )


@stage_task("replay-report")
def publish_release_artifact(report: ReleaseReport, feed: str) -> None:
    """Attach the release's counts to the flow run (no values)."""
    create_markdown_artifact(
        markdown=render_release_markdown(report, feed=feed),
        key=f"{feed.replace('_', '-')}-quarantine-replay",
        description=f"{feed}: quarantined rows re-validated and released (counts, no PHI)",
    )
