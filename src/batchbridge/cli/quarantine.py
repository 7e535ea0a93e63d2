"""`batchbridge quarantine …`: data stewards review, fix, export, import, release, discard rows."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from batchbridge.cli.output import print_json
from batchbridge.cli.params import ConfigDirOption, JsonOption, WhyOption, parse_ids
from batchbridge.cli.steward_session import steward_service
from batchbridge.cli.steward_views import render_listing, render_shown, shown_dict, summary_dict
from batchbridge.config.stewards import required_role
from batchbridge.errors import RunFailedError, StewardError
from batchbridge.ledger.runs_query import resolve_file_id, resolve_run_id
from batchbridge.steward.service import StewardService

app = typer.Typer(
    help="Data stewards: review, fix and release quarantined rows (every look is audited).",
    no_args_is_help=True,
)

RowIdArgument = Annotated[int, typer.Argument(help="Quarantined row id (from `list`).", min=1)]
RowIdsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Quarantined row ids: `3 4 5` or `3,4,5`.", show_default=False, metavar="[IDS]..."
    ),
]
FeedFilter = Annotated[str | None, typer.Option("--feed", help="Only rows of this feed.")]
ReasonFilter = Annotated[
    str | None,
    typer.Option(
        "--reason", help="Only rows failing this rule: 'column:rule' or just 'rule' (a filter)."
    ),
]
FileFilter = Annotated[
    str | None,
    typer.Option(
        "--file", help="Only rows of this ledger file id (or unique prefix).", show_default=False
    ),
]


def full_ids(
    service: StewardService, action: str, *, run_id: str | None, file_id: str | None
) -> tuple[str | None, str | None]:
    """Run and file ids as typed (full, or a unique prefix) made whole, within the actor's
    tenants; an unknown or ambiguous one is refused (exit 2) rather than matching nothing."""
    tenants = service.directory.tenants(service.actor, required_role(action))
    with service.store.session() as session:
        run = resolve_run_id(session, run_id, tenants=tenants) if run_id else None
        file = resolve_file_id(session, file_id, tenants=tenants) if file_id else None
    return run, file


def parse_sets(sets: list[str]) -> dict[str, str]:
    """--set column=value pairs (the value may be empty, or hold '=')."""
    changes: dict[str, str] = {}
    for item in sets:
        column, sep, value = item.partition("=")
        if not sep or not column.strip():
            # The item is not echoed: without '=' it may be a bare value (patient data).
            raise StewardError("--set needs COLUMN=VALUE; one item has no column name or '='")
        changes[column.strip()] = value
    return changes


class ListStatus(StrEnum):
    """Statuses `quarantine list` filters on."""

    QUARANTINED = "quarantined"
    FIXED = "fixed"
    RELEASED = "released"
    DISCARDED = "discarded"
    ALL = "all"


DEFAULT_LIST_LIMIT = 100


@app.command("list")
def list_command(
    config_dir: ConfigDirOption = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    feed: FeedFilter = None,
    file_id: FileFilter = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run", help="Only rows quarantined by this run id (or unique prefix)."),
    ] = None,
    reason: ReasonFilter = None,
    status: Annotated[
        ListStatus,
        typer.Option(
            "--status",
            help="quarantined (fixed ones included), fixed (not yet released), released, "
            "discarded, or all.",
        ),
    ] = ListStatus.QUARANTINED,
    record_id: Annotated[
        str | None,
        typer.Option(
            "--record-id",
            help="Only the row(s) with exactly this record id (the search is audited).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", help="Show at most this many rows (0: all).", min=0)
    ] = DEFAULT_LIST_LIMIT,
    as_json: JsonOption = False,
) -> int:
    """List quarantined rows: ids, where they came from, age, reasons (never values)."""
    with steward_service(config_dir) as service:
        run_id, file_id = full_ids(service, "list", run_id=run_id, file_id=file_id)
        page = service.list_page(
            tenant=tenant,
            feed=feed,
            file_id=file_id,
            run_id=run_id,
            reason=reason,
            status=None if status is ListStatus.ALL else status.value,
            record_id=record_id,
            limit=limit or None,
        )
    if as_json:
        print_json([summary_dict(r) for r in page.rows])
    else:
        print(render_listing(page))
    return 0


@app.command("show")
def show_command(
    row_id: RowIdArgument,
    config_dir: ConfigDirOption = None,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Show the values (audited; needs --why).")
    ] = False,
    why: WhyOption = None,
    as_json: JsonOption = False,
) -> int:
    """One row with its reasons and edits; values masked unless --reveal."""
    with steward_service(config_dir) as service:
        shown = service.reveal(row_id, why=why or "") if reveal else service.show(row_id)
    if as_json:
        print_json(shown_dict(shown))
    else:
        print(render_shown(shown))
    return 0


@app.command("fix")
def fix_command(
    row_id: RowIdArgument,
    sets: Annotated[
        list[str],
        typer.Option("--set", help="COLUMN=VALUE to set (repeat for several).", metavar="COL=VAL"),
    ],
    config_dir: ConfigDirOption = None,
    why: WhyOption = None,
) -> int:
    """Set column values of a row (before/after kept encrypted, audited)."""
    with steward_service(config_dir) as service:
        service.fix(row_id, parse_sets(sets), why=why)
    print(f"row {row_id}: fix recorded (release it to load it)")
    return 0


@app.command("export")
def export_command(
    file: Annotated[Path, typer.Argument(help="New CSV file to write (0600; must not exist).")],
    why: Annotated[
        str, typer.Option("--why", help="Why you export these rows (required; audited).")
    ],
    ids: Annotated[
        list[str] | None,
        typer.Option("--id", help="Row ids to export (repeat, or comma-separate)."),
    ] = None,
    feed: FeedFilter = None,
    reason: ReasonFilter = None,
    config_dir: ConfigDirOption = None,
) -> int:
    """Write rows to a new CSV readable by you only, for offline fixing (audited)."""
    with steward_service(config_dir) as service:
        written = service.export_rows(
            file, ids=parse_ids(ids) or None, feed=feed, reason=reason, why=why
        )
    if not written:
        print("no quarantined rows match; no file written")
        return StewardError.exit_code
    print(f"{written} row(s) written to {file} (readable by you only); delete it once imported")
    return 0


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="An edited export file.")],
    config_dir: ConfigDirOption = None,
    why: WhyOption = None,
) -> int:
    """Apply an edited export: all rows or none (audited)."""
    with steward_service(config_dir) as service:
        changed = service.import_rows(file, why=why)
    print(f"{file.name}: {changed} row(s) changed (release them to load them)")
    return 0


@app.command("release")
def release_command(
    row_ids: RowIdsArgument = None,
    feed: FeedFilter = None,
    reason: ReasonFilter = None,
    file_id: FileFilter = None,
    config_dir: ConfigDirOption = None,
    why: WhyOption = None,
    as_json: JsonOption = False,
) -> int:
    """Re-validate rows with today's rules and mapping; load those that pass."""
    # Release loads into the targets: Polars and the target drivers load only here.
    from batchbridge.steward.release import release_rows
    from batchbridge.steward.release_report import render_release_text

    ids = parse_ids(row_ids)
    with steward_service(config_dir) as service:
        _, file_id = full_ids(service, "release", run_id=None, file_id=file_id)
        released = release_rows(
            service, ids=ids or None, feed=feed, reason=reason, file_id=file_id, why=why
        )
    if as_json:
        print_json(released.to_dict())
    else:
        print(render_release_text(released))
    if released.errors:
        return RunFailedError.exit_code
    if released.released == 0:
        print(
            "nothing released: no selected row passes today's rules (or none was selected)",
            file=sys.stderr,
        )
        return StewardError.exit_code
    return 0


@app.command("discard")
def discard_command(
    row_id: RowIdArgument,
    why: Annotated[
        str, typer.Option("--why", help="Why the row is settled without loading (required).")
    ],
    config_dir: ConfigDirOption = None,
) -> int:
    """Settle a row for good without loading it (audited)."""
    with steward_service(config_dir) as service:
        service.discard(row_id, reason=why)
    print(f"row {row_id}: discarded")
    return 0
