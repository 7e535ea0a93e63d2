"""How steward data looks at the terminal: listings, one row, balances (masked unless revealed)."""

from __future__ import annotations

from typing import Any

from batchbridge.ledger.quarantine_store import FileBalance, QuarantinePage, QuarantineSummary
from batchbridge.steward.queue import quarantined_age
from batchbridge.steward.service import ShownRow


def summary_dict(row: QuarantineSummary) -> dict[str, Any]:
    """A listed row as JSON: ids, where it came from, reasons, status; never values."""
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
        "fixed": row.fixed,
        "quarantined_at": row.quarantined_at,
    }


def render_listing(page: QuarantinePage) -> str:
    """One line per row: id, where it came from, status, age and reasons (never values)."""
    rows = page.rows
    if not rows:
        return "no quarantined rows match"
    lines = [
        f"{'id':>7}  {'tenant':<14} {'feed':<14} {'file':<36} {'row':>7}  {'status':<11} "
        f"{'age':>4}  reasons"
    ]
    for r in rows:
        lines.append(
            f"{r.id:>7}  {r.tenant[:14]:<14} {r.feed[:14]:<14} {r.file_name[:36]:<36} "
            f"{r.row_number:>7}  {r.shown_status:<11} {quarantined_age(r.quarantined_at):>4}  "
            f"{', '.join(r.reasons)}"
        )
    if page.total > len(rows):
        lines.append(f"{len(rows)} of {page.total} row(s) shown (--limit 0 shows all)")
    else:
        lines.append(f"{len(rows)} row(s)")
    return "\n".join(lines)


def shown_dict(shown: ShownRow) -> dict[str, Any]:
    """One row as JSON; edits carry before/after only when the row was revealed."""
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
