"""`batchbridge runs …`: find runs (newest first, filtered) and trace one run file by file."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from sqlalchemy.orm import Session

from batchbridge.cli.output import print_json
from batchbridge.cli.params import ConfigDirOption, JsonOption
from batchbridge.config.settings import load_settings
from batchbridge.ledger.models import RunStatus
from batchbridge.ledger.run_report import duration, format_count, short_id
from batchbridge.ledger.runs_query import (
    COUNT_KEYS,
    RELEASE_KIND,
    FileDetail,
    RunDetail,
    RunFilter,
    RunSummary,
    as_utc,
    list_runs,
    local_minute,
    resolve_run_id,
    run_detail,
)
from batchbridge.ledger.store import LedgerStore

app = typer.Typer(
    help="Find runs and see what each did: files, stages, counts, reasons, timings.",
    no_args_is_help=True,
)

RELATIVE_AGE = re.compile(r"(\d+)\s*([mhdw])")
AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
STAGE_ORDER = (
    *("contract", "fetch", "decrypt", "validate", "quarantine"),
    *("transform", "load", "reconcile", "archive"),
)
"""Stages in the order a file goes through them (timings are shown in this order)."""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO date or date-time (local time unless it has an offset), or an age.

    Ages are a whole number and a unit: m(inutes), h(ours), d(ays), w(eeks): `90m`,
    `12h`, `2d`, `1w`. A date alone means its local midnight.
    """
    value = text.strip()
    if match := RELATIVE_AGE.fullmatch(value.lower()):
        age = timedelta(**{AGE_UNITS[match.group(2)]: int(match.group(1))})
        return (now or datetime.now().astimezone()) - age
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        # The value is not echoed: whatever was typed stays out of the terminal log.
        raise typer.BadParameter(
            "give an ISO date or time (2026-12-01, 2026-12-01T02:00, 2026-12-01T02:00+01:00) "
            "or an age: a number and m, h, d or w (90m, 12h, 2d, 1w)",
            param_hint="'--since'",
        ) from None
    return moment.astimezone() if moment.tzinfo is None else moment


@contextmanager
def ledger_session(config_dir: ConfigDirOption) -> Iterator[Session]:
    """A session on the configured ledger, closed (engine and all) afterwards."""
    store = LedgerStore.open_existing(load_settings(config_dir).database_url)
    try:
        with store.session() as session:
            yield session
    finally:
        store.engine.dispose()


def kind_word(kind: str) -> str:
    return "release" if kind == RELEASE_KIND else kind


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Aligned columns, two spaces apart; columns in `right` are right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [headers, *rows]
    ]


def _slashed(summary: RunSummary, keys: Sequence[str]) -> str:
    return "/".join(format_count(summary.counts.get(k)) for k in keys)


def render_list(runs: Sequence[RunSummary]) -> list[str]:
    """One line per run (times local)."""
    headers = ["run", "feed", "tenant", "status", "started", "took", "files ok/failed/skipped"]
    headers += ["rows read/valid/quar.", "rerun", "kind"]
    rows = [
        [
            short_id(r.id),
            r.feed,
            r.tenant,
            r.status,
            local_minute(r.started_at),
            duration(r.seconds),
            _slashed(r, COUNT_KEYS[:3]),
            _slashed(r, COUNT_KEYS[3:]),
            "rerun" if r.is_rerun else "",
            kind_word(r.kind),
        ]
        for r in runs
    ]
    return table(headers, rows, right={5, 6, 7})


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    """A run's list line as JSON (times UTC, ISO 8601)."""
    data = {k: v for k, v in asdict(summary).items() if k != "counts"}
    data.update(
        short_id=short_id(summary.id),
        started_at=as_utc(summary.started_at).isoformat(),
        finished_at=as_utc(summary.finished_at).isoformat() if summary.finished_at else None,
        seconds=summary.seconds,
    )
    return data | {key: summary.counts.get(key) for key in COUNT_KEYS}


def prefect_flow_run_url(flow_run_id: str | None) -> str | None:
    """The flow run's page in the Prefect UI, when a UI or API URL is configured (no guess).

    PREFECT_UI_URL, else what Prefect derives from PREFECT_API_URL (environment or the
    active profile). A temporary server's address dies with it: no link then.
    """
    if not flow_run_id:
        return None
    # Prefect's settings load only here: listing runs must stay fast.
    from prefect.settings import get_current_settings

    ui_url = get_current_settings().ui_url
    return f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}" if ui_url else None


def _ordered_seconds(seconds: dict[str, float]) -> list[tuple[str, float]]:
    known = [(s, seconds[s]) for s in STAGE_ORDER if s in seconds]
    return known + sorted((s, v) for s, v in seconds.items() if s not in STAGE_ORDER)


def render_file(f: FileDetail, *, release: bool) -> list[str]:
    """A file's block in `runs show`."""
    rerun = " (seen by an earlier run)" if f.is_rerun else ""
    lines = [f"  {f.name}", f"    file id    {f.file_id or '-'}"]
    if f.outcome == "failed":
        lines.append(f"    outcome    failed at {f.stage or '?'}: [{f.reason}] {f.message}{rerun}")
    else:
        reached = "" if f.stage == f.outcome else f", reached {f.stage or '?'}"
        lines.append(f"    outcome    {f.outcome}{reached}{rerun}")
        if f.reason:  # done, with a remark (e.g. not moved to the processed folder)
            lines.append(f"    note       [{f.reason}] {f.message}")
    left = "failed" if f.outcome == "failed" else f.stage  # the ledger state this run left
    if not release and f.state_now and f.state_now != left:
        lines.append(f"    ledger now {f.state_now} (a later run or release took it on)")
    balanced = "-" if f.balanced is None else ("yes" if f.balanced else "NO")
    if release:
        lines.append(
            f"    rows       selected {format_count(f.rows_read)}  released "
            f"{format_count(f.rows_valid)}  still quarantined {format_count(f.rows_quarantined)}"
            f"  file balanced {balanced}"
        )
    else:
        lines.append(
            f"    rows       read {format_count(f.rows_read)}  declared "
            f"{format_count(f.rows_declared)}  valid {format_count(f.rows_valid)}  "
            f"quarantined {format_count(f.rows_quarantined)}  balanced {balanced}"
        )
    for t in f.targets:
        took = f" in {duration(t.seconds)}" if t.seconds is not None else ""
        load = f" (load {short_id(t.load_id)}{took})" if t.load_id else ""
        lines.append(
            f"    target     {t.target}: sent {t.sent} inserted {t.inserted} updated {t.updated} "
            f"unchanged {t.unchanged} rejected {t.rejected} confirmed {t.confirmed}"
            + (f" inactivated {t.inactivated}" if t.inactivated else "")
            + load
        )
        lines += [
            f"      rejected {count} x {reason}" for reason, count in t.rejection_reasons.items()
        ]
    if f.stage_seconds:
        timed = _ordered_seconds(f.stage_seconds)
        lines.append("    seconds    " + "  ".join(f"{s} {v:.2f}" for s, v in timed))
    word = "still invalid" if release else "quarantined"
    lines += [f"    {word} {count} x {reason}" for reason, count in f.quarantine_reasons.items()]
    return lines


def render_detail(detail: RunDetail, ui_url: str | None) -> list[str]:
    """`runs show`: the run's header, then each file's trace."""
    run = detail.run
    rerun = "  (rerun)" if run.is_rerun else ""
    lines = [
        f"run {run.id}{rerun}",
        f"  kind       {kind_word(run.kind)}",
        f"  feed       {run.feed}  (tenant {run.tenant})",
        f"  status     {run.status.upper()}",
        f"  started    {local_minute(run.started_at)}  finished {local_minute(run.finished_at)}  "
        f"took {duration(run.seconds)}",
        f"  prefect    flow run {run.flow_run_id or '- (run outside Prefect)'}",
    ]
    if ui_url:
        lines.append(f"             {ui_url}")
    if detail.requested_by:
        lines.append(f"  requested  by {detail.requested_by}")
    release = run.kind == RELEASE_KIND
    lines += ["", f"files ({len(detail.files)}):" if detail.files else "files: none processed"]
    for f in detail.files:
        lines += render_file(f, release=release)
    if detail.skipped:
        lines += ["", f"skipped ({len(detail.skipped)}):"]
        lines += [f"  {name}  ({why})" for name, why in detail.skipped.items()]
    lines += [f"note: {note}" for note in detail.notes]
    if detail.error:
        error = detail.error
        lines.append(
            f"run failed at {error.get('stage')}: [{error.get('reason')}] {error.get('message')}"
        )
    return lines


def detail_dict(detail: RunDetail, ui_url: str | None) -> dict[str, Any]:
    """`runs show --json`."""
    data = asdict(detail)
    data["run"] = summary_dict(detail.run)
    data["prefect_flow_run_url"] = ui_url
    return data


def _filters_text(where: RunFilter) -> str:
    given = {"feed": where.feed, "tenant": where.tenant, "status": where.status}
    parts = [f"{k} {v}" for k, v in given.items() if v is not None]
    if where.since is not None:
        parts.append(f"since {local_minute(where.since)}")
    return ", ".join(parts) or "any"


@app.command("list")
def list_command(
    feed: Annotated[str | None, typer.Option("--feed", help="Only runs of this feed.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    status: Annotated[
        RunStatus | None, typer.Option("--status", help="Only runs that ended so (or still run).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only runs started since: an ISO date/time (local unless it has an offset) "
            "or an age such as 90m, 12h, 2d, 1w.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 20,
    config_dir: ConfigDirOption = None,
    as_json: JsonOption = False,
) -> int:
    """Runs, newest first: status, times, files and rows (counts only), rerun, kind."""
    where = RunFilter(
        feed=feed,
        tenant=tenant,
        status=status.value if status is not None else None,
        since=parse_since(since) if since is not None else None,
        limit=limit,
    )
    with ledger_session(config_dir) as session:
        runs = list_runs(session, where)
    if as_json:
        print_json([summary_dict(r) for r in runs])
    elif not runs:
        print(f"no runs match ({_filters_text(where)})")
    else:
        print("\n".join(render_list(runs)))
    return 0


@app.command("show")
def show_command(
    ident: Annotated[
        str,
        typer.Argument(
            help="A run id, or a unique prefix of one (at least 4 hex digits).", metavar="ID"
        ),
    ],
    config_dir: ConfigDirOption = None,
    as_json: JsonOption = False,
) -> int:
    """One run's trace: ids, Prefect link, timings; per file outcome, stage, counts, seconds."""
    with ledger_session(config_dir) as session:
        detail = run_detail(session, resolve_run_id(session, ident))
    assert detail is not None  # resolve_run_id found it in the same transaction
    ui_url = prefect_flow_run_url(detail.run.flow_run_id)
    if as_json:
        print_json(detail_dict(detail, ui_url))
    else:
        print("\n".join(render_detail(detail, ui_url)))
    return 0
