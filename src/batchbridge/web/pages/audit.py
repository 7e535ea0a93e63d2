"""The audit log for admins: events by actor, action, row and day, and a "verify chain" button."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from batchbridge.errors import StewardError
from batchbridge.ledger.audit import ChainReport
from batchbridge.web.deps import CsrfChecked, Service
from batchbridge.web.pages.forms import Offset, blank_to_none, utc_minute
from batchbridge.web.render import page

router = APIRouter()

ACTIONS = (
    *("list", "search", "show", "reveal", "fix", "export", "import", "release", "discard"),
    *("report", "rotate_keys", "access_denied"),
)
"""Actions the steward service writes (a filter choice)."""
PAGE = 100

Actor = Annotated[str | None, Query(max_length=254, pattern=r"^[^\x00-\x1f\x7f]*$")]
Action = Annotated[str, Query(pattern=f"^(?:{'|'.join(ACTIONS)})?$")]
RowFilter = Annotated[int | None, Query(ge=1, le=2**63 - 1)]
Day = Annotated[str, Query(pattern=r"^(?:[0-9]{4}-[0-9]{2}-[0-9]{2})?$")]


def _day(text: str, *, end: bool) -> datetime | None:
    """The start of a UTC day (or of the next one, for an inclusive end); None when blank."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise StewardError("a day is a real date written YYYY-MM-DD") from None
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start + timedelta(days=1) if end else start


@router.get("/audit")
def audit_page(
    request: Request,
    service: Service,
    actor: Actor = None,
    action: Action = "",
    row: RowFilter = None,
    since: Day = "",
    until: Day = "",
    offset: Offset = 0,
) -> Response:
    """Events of the tenants the person is admin of, newest first (the look is audited)."""
    return _audit(request, service, actor, action, row, since, until, offset, chain=None)


@router.post("/audit/verify", dependencies=[CsrfChecked])
def verify(request: Request, service: Service) -> Response:
    """Recompute the whole hash chain and show what it found."""
    chain = service.verify_audit_chain()
    return _audit(request, service, None, "", None, "", "", 0, chain=chain)


def _audit(
    request: Request,
    service: Service,
    actor: str | None,
    action: str,
    row: int | None,
    since: str,
    until: str,
    offset: int,
    *,
    chain: ChainReport | None,
) -> Response:
    found = service.audit_events(
        actor=blank_to_none((actor or "").strip()),
        action=blank_to_none(action),
        row_id=row,
        since=_day(since, end=False),
        until=_day(until, end=True),
        offset=offset,
        limit=PAGE,
    )
    kept = {"actor": actor, "action": action, "row": row, "since": since, "until": until}
    query = {k: v for k, v in kept.items() if v}

    def link(new_offset: int) -> str:
        return "/audit?" + urlencode({**query, "offset": new_offset})

    context: dict[str, Any] = {
        "found": found,
        "filters": kept,
        "actions": ACTIONS,
        "chain": chain,
        "when": utc_minute,
        "prev": link(max(offset - PAGE, 0)) if offset > 0 else None,
        "next": link(offset + PAGE) if offset + PAGE < found.total else None,
    }
    return page(request, "audit.html", context, phi=False)
