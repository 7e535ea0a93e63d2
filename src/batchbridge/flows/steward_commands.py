"""What the CLI's steward commands do: quarantine …, report, audit verify, keys rotate."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from batchbridge.errors import AuditChainError, RunFailedError, StewardError
from batchbridge.flows.steward import ShownRow, StewardService
from batchbridge.ledger.audit import verify_chain
from batchbridge.ledger.quarantine_store import FileBalance, QuarantineSummary
from batchbridge.ledger.store import LedgerStore
from batchbridge.settings import load_settings
from batchbridge.tasks.release import (
    RELEASE_REPORT_KIND,
    ReleaseRun,
    render_release_run,
    render_release_text,
)
from batchbridge.tasks.report import RunReport, render_text


def add_steward_commands(commands: Any) -> None:
    """Register `quarantine`, `report`, `audit` and `keys` on the CLI's subparsers."""
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config-dir", type=Path, default=None, help="folder of feed YAMLs")

    quarantine = commands.add_parser(
        "quarantine", help="data stewards: review, fix and release quarantined rows"
    )
    q = quarantine.add_subparsers(dest="quarantine_command", required=True)

    listing = q.add_parser("list", parents=[config], help="list rows (ids, reasons; no values)")
    listing.add_argument("--tenant")
    listing.add_argument("--feed")
    listing.add_argument("--file", dest="file_id", help="ledger file id")
    listing.add_argument("--run", dest="run_id", help="id of the run that quarantined them")
    listing.add_argument("--reason", help="'column:rule' or just 'rule'")
    listing.add_argument(
        "--status", default="quarantined", help="quarantined, released, discarded or all"
    )
    listing.add_argument("--json", action="store_true")

    show = q.add_parser("show", parents=[config], help="one row, masked unless --reveal")
    show.add_argument("id", type=int)
    show.add_argument("--reveal", action="store_true", help="show values (audited; needs --why)")
    show.add_argument("--why", help="why you need to see the values (goes to the audit log)")
    show.add_argument("--json", action="store_true")

    fix = q.add_parser("fix", parents=[config], help="set column values of a row")
    fix.add_argument("id", type=int)
    fix.add_argument("--set", dest="sets", action="append", required=True, metavar="COLUMN=VALUE")
    fix.add_argument("--why")

    export = q.add_parser("export", parents=[config], help="rows to a new 0600 CSV (audited)")
    export.add_argument("file", type=Path)
    export.add_argument("--id", dest="ids", type=int, action="append")
    export.add_argument("--feed")
    export.add_argument("--reason")
    export.add_argument("--why", required=True)

    imp = q.add_parser("import", parents=[config], help="apply an edited export, all or nothing")
    imp.add_argument("file", type=Path)
    imp.add_argument("--why")

    release = q.add_parser(
        "release", parents=[config], help="re-validate and load rows that now pass"
    )
    release.add_argument("--id", dest="ids", type=int, action="append")
    release.add_argument("--feed")
    release.add_argument("--reason", help="'column:rule' or just 'rule'")
    release.add_argument("--file", dest="file_id", help="ledger file id")
    release.add_argument("--json", action="store_true")

    discard = q.add_parser("discard", parents=[config], help="settle a row without loading it")
    discard.add_argument("id", type=int)
    discard.add_argument("--reason", required=True)

    report = commands.add_parser(
        "report", parents=[config], help="a run's report, or a file's balance, by id"
    )
    report.add_argument("id", help="run id or ledger file id")
    report.add_argument("--json", action="store_true")

    audit = commands.add_parser("audit", help="the audit log")
    a = audit.add_subparsers(dest="audit_command", required=True)
    a.add_parser("verify", parents=[config], help="check the hash chain (edited/inserted/deleted)")

    keys = commands.add_parser("keys", help="quarantine encryption keys")
    k = keys.add_subparsers(dest="keys_command", required=True)
    rotate = k.add_parser("rotate", parents=[config], help="re-encrypt rows under the current key")
    rotate.add_argument("--feed", required=True)


def run_steward_command(args: argparse.Namespace) -> int:
    """Dispatch a parsed steward command; errors propagate to the CLI's exit-code handler."""
    from batchbridge.flows.cli import print_json

    if args.command == "audit":
        return audit_verify_command(config_dir=args.config_dir)
    service = StewardService.from_settings(load_settings(args.config_dir))
    try:
        if args.command == "report":
            return report_command(service, args.id, as_json=args.json)
        if args.command == "keys":
            rows = service.rotate_keys(args.feed)
            print(f"feed {args.feed}: {rows} row(s) re-encrypted under the current key")
            return 0
        command = args.quarantine_command
        if command == "list":
            status = None if args.status == "all" else args.status
            rows_listed = service.list_rows(
                tenant=args.tenant,
                feed=args.feed,
                file_id=args.file_id,
                run_id=args.run_id,
                reason=args.reason,
                status=status,
            )
            if args.json:
                print_json([_summary_dict(r) for r in rows_listed])
            else:
                print(render_listing(rows_listed))
            return 0
        if command == "show":
            if args.reveal:
                shown = service.reveal(args.id, why=args.why or "")
            else:
                shown = service.show(args.id)
            if args.json:
                print_json(_shown_dict(shown))
            else:
                print(render_shown(shown))
            return 0
        if command == "fix":
            service.fix(args.id, parse_sets(args.sets), why=args.why)
            print(f"row {args.id}: fix recorded (release it to load it)")
            return 0
        if command == "export":
            written = service.export_rows(
                args.file, ids=args.ids, feed=args.feed, reason=args.reason, why=args.why
            )
            if written:
                print(
                    f"{written} row(s) written to {args.file} (readable by you only); "
                    "delete it once imported"
                )
            else:
                print("no quarantined rows match; no file written")
            return 0
        if command == "import":
            changed = service.import_rows(args.file, why=args.why)
            print(f"{args.file.name}: {changed} row(s) changed (release them to load them)")
            return 0
        if command == "release":
            released = service.release(
                ids=args.ids, feed=args.feed, reason=args.reason, file_id=args.file_id
            )
            if args.json:
                print_json(released.to_dict())
            else:
                print(render_release_text(released))
            return RunFailedError.exit_code if released.errors else 0
        if command == "discard":
            service.discard(args.id, reason=args.reason)
            print(f"row {args.id}: discarded")
            return 0
    finally:
        service.store.engine.dispose()
    return 2


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


def _summary_dict(row: QuarantineSummary) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant": row.tenant,
        "feed": row.feed,
        "file_id": row.file_id,
        "file_name": row.file_name,
        "run_id": row.run_id,
        "row_number": row.row_number,
        "reasons": row.reasons,
        "status": row.status,
    }


def render_listing(rows: list[QuarantineSummary]) -> str:
    """One line per row: id, where it came from, status and reasons (never values)."""
    if not rows:
        return "no quarantined rows match"
    lines = [
        f"{'id':>7}  {'tenant':<14} {'feed':<14} {'file':<40} {'row':>7}  {'status':<11}  reasons"
    ]
    for r in rows:
        lines.append(
            f"{r.id:>7}  {r.tenant[:14]:<14} {r.feed[:14]:<14} {r.file_name[:40]:<40} "
            f"{r.row_number:>7}  {r.status:<11}  {', '.join(r.reasons)}"
        )
    lines.append(f"{len(rows)} row(s)")
    return "\n".join(lines)


def _shown_dict(shown: ShownRow) -> dict[str, Any]:
    return {
        "id": shown.id,
        "tenant": shown.tenant,
        "feed": shown.feed,
        "file_id": shown.file_id,
        "file_name": shown.file_name,
        "row_number": shown.row_number,
        "reasons": shown.reasons,
        "status": shown.status,
        "revealed": shown.revealed,
        "values": shown.values,
        "settled_by": shown.settled_by,
        "settled_at": shown.settled_at,
        "settle_reason": shown.settle_reason,
        "released_load_id": shown.released_load_id,
        "edits": [
            {
                "id": e.id,
                "actor": e.actor,
                "at": e.at,
                "columns": e.columns,
                "source": e.source,
                **({"before": e.before, "after": e.after} if shown.revealed else {}),
            }
            for e in shown.edits
        ],
    }


def render_shown(shown: ShownRow) -> str:
    """A row for the terminal: where it came from, why, its values, its edits."""
    mode = "values revealed (audited)" if shown.revealed else "values masked"
    lines = [
        f"quarantined row {shown.id}: {shown.status}, {mode}",
        f"tenant {shown.tenant}  feed {shown.feed}  file {shown.file_name} ({shown.file_id})  "
        f"row {shown.row_number}",
        f"reasons: {', '.join(shown.reasons) or '-'}",
    ]
    if shown.settled_by:
        lines.append(
            f"settled by {shown.settled_by} at {shown.settled_at}"
            + (f": {shown.settle_reason}" if shown.settle_reason else "")
            + (f" (load {shown.released_load_id})" if shown.released_load_id else "")
        )
    width = max((len(c) for c in shown.values), default=0)
    lines += [f"  {c:<{width}}  {'-' if v is None else v}" for c, v in shown.values.items()]
    if shown.edits:
        lines.append("edits:")
    for e in shown.edits:
        lines.append(f"  {e.at:%Y-%m-%d %H:%M} UTC  {e.actor}  {e.source}  {', '.join(e.columns)}")
        if shown.revealed and e.before is not None and e.after is not None:
            lines += [f"      {c}: {e.before.get(c)!r} -> {e.after.get(c)!r}" for c in e.columns]
    if not shown.revealed:
        lines.append('(--reveal --why "…" shows the values; that view is audited)')
    return "\n".join(lines)


def render_balance(balance: FileBalance) -> str:
    """read = loaded at first run + loaded after fix + still quarantined + discarded."""

    def fmt(value: int | None) -> str:
        return "-" if value is None else str(value)

    return (
        f"file {balance.file_name} ({balance.file_id})  feed {balance.feed}  "
        f"tenant {balance.tenant}  state {balance.state}\n"
        f"  read {fmt(balance.rows_read)} = loaded at first run {fmt(balance.loaded_first_run)}"
        f" + loaded after fix {balance.loaded_after_fix}"
        f" + still quarantined {balance.still_quarantined}"
        f" + discarded {balance.discarded}  balanced {'yes' if balance.balanced else 'NO'}"
    )


def report_command(service: StewardService, ident: str, *, as_json: bool) -> int:
    """A run's stored report with its files' balances now, or one file's balance."""
    from batchbridge.flows.cli import print_json

    found = service.run_report(ident)
    if found is None:
        try:
            balance = service.file_balance(ident)
        except StewardError:
            raise StewardError(
                f"no run or file {ident} among your tenants' runs and files"
            ) from None
        if as_json:
            print_json(balance.to_dict())
        else:
            print(render_balance(balance))
        return 0
    if as_json:
        print_json(found)
        return 0
    stored = found["report"]
    if stored.get("kind") == RELEASE_REPORT_KIND:
        print("\n".join(render_release_run(ReleaseRun.from_dict(stored))))
    elif stored:
        print(render_text(RunReport.from_dict(stored)))
    else:
        print(f"run {ident}: {found['status']} (no report stored yet)")
    if found["balances"]:
        print("\nbalance now (read = first run + after fix + still quarantined + discarded):")
        for entry in found["balances"]:
            print(
                render_balance(FileBalance(**{k: v for k, v in entry.items() if k != "balanced"}))
            )
    return 0


def audit_verify_command(*, config_dir: Path | None) -> int:
    """Recompute the audit chain; exit AuditChainError.exit_code when anything is wrong."""
    store = LedgerStore.from_url(load_settings(config_dir).database_url)
    try:
        with store.session() as s:
            checked = verify_chain(s)
    finally:
        store.engine.dispose()
    if checked.ok:
        print(f"audit log: {checked.events} event(s) checked, chain intact")
        return 0
    print(f"audit log: {checked.events} event(s) checked, {len(checked.problems)} problem(s):")
    for problem in checked.problems:
        print(f"  - {problem}")
    return AuditChainError.exit_code
