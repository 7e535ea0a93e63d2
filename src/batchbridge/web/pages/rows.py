"""One quarantined row: masked view, audited reveal, fix with a live preview, release, discard.

Every state-changing request is a POST with the CSRF token; the reveal and the fix take a
reason that goes to the audit log. The preview answers pass/fail and 'column:rule' only
(see steward.preview: not audited). A row of another tenant is a 404 like a missing one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from batchbridge.errors import StewardError
from batchbridge.ledger.models import QuarantineStatus
from batchbridge.steward.release import release_rows
from batchbridge.steward.rule_words import rule_words
from batchbridge.steward.service import ShownRow
from batchbridge.web.deps import CsrfChecked, Service
from batchbridge.web.pages.bulk import release_result
from batchbridge.web.pages.forms import (
    BLANK_PREFIX,
    SET_PREFIX,
    edits_of,
    may,
    utc_minute,
    why_text,
)
from batchbridge.web.render import fragment, page

router = APIRouter()

RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
DONE = {
    "fixed": "Fix saved and audited. Release the row to load it.",
    "unchanged": "Nothing changed: the values typed equal the row's values.",
    "discarded": "Row discarded (audited). It will not be loaded.",
}
Done = Annotated[str | None, Query(pattern=f"^(?:{'|'.join(DONE)})$")]


@router.get("/rows/{row_id}")
def row_page(request: Request, service: Service, row_id: RowId, done: Done = None) -> Response:
    """The row, masked (audited as a show)."""
    return _row(request, service, service.show(row_id), notice=DONE.get(done or ""))


@router.post("/rows/{row_id}/reveal", dependencies=[CsrfChecked])
async def reveal(request: Request, service: Service, row_id: RowId) -> Response:
    """The row in clear: needs a reason, audited before anything is shown; never cached."""
    form = await request.form()
    try:
        why = why_text(form.get("why"), required=True, what="a reveal")
    except StewardError as exc:
        return _row(request, service, service.show(row_id), problem=str(exc), status_code=400)
    assert why is not None
    return _row(request, service, service.reveal(row_id, why=why))


@router.post("/rows/{row_id}/preview", dependencies=[CsrfChecked])
async def preview(request: Request, service: Service, row_id: RowId) -> Response:
    """Would the row pass with the typed values? Re-validated with today's rules; not saved."""
    form = await request.form()
    try:
        found = service.preview_fix(row_id, edits_of(form))
    except StewardError as exc:
        if type(exc) is not StewardError:
            raise  # not found, access denied, state: the error pages
        return fragment(request, "row_preview.html", {"preview": None, "problem": str(exc)})
    context = {"preview": found, "problem": None, "rule_words": rule_words}
    return fragment(request, "row_preview.html", context)


@router.post("/rows/{row_id}/fix", dependencies=[CsrfChecked])
async def fix(request: Request, service: Service, row_id: RowId) -> Response:
    """Save the typed values (before/after kept encrypted, audited with the reason)."""
    form = await request.form()
    try:
        why = why_text(form.get("why"), required=True, what="a fix")
        changed = service.fix(row_id, edits_of(form), why=why, source="web")
    except StewardError as exc:
        if type(exc) is not StewardError:
            raise
        return _row(request, service, service.show(row_id), problem=str(exc), status_code=400)
    done = "fixed" if changed else "unchanged"
    return RedirectResponse(f"/rows/{row_id}?done={done}", status_code=303)


@router.post("/rows/{row_id}/release", dependencies=[CsrfChecked])
async def release(request: Request, service: Service, row_id: RowId) -> Response:
    """Re-validate this row with today's rules and load it when it passes (audited)."""
    form = await request.form()
    try:
        why = why_text(form.get("why"), required=False, what="a release")
    except StewardError as exc:
        return _row(request, service, service.show(row_id), problem=str(exc), status_code=400)
    report = release_rows(service, ids=[row_id], why=why)
    return release_result(request, report, back=f"/rows/{row_id}")


@router.post("/rows/{row_id}/discard", dependencies=[CsrfChecked])
async def discard(request: Request, service: Service, row_id: RowId) -> Response:
    """Settle the row for good without loading it; the reason is required and audited."""
    form = await request.form()
    try:
        why = why_text(form.get("why"), required=True, what="a discard")
    except StewardError as exc:
        return _row(request, service, service.show(row_id), problem=str(exc), status_code=400)
    assert why is not None
    service.discard(row_id, reason=why)
    return RedirectResponse(f"/rows/{row_id}?done=discarded", status_code=303)


def _row(
    request: Request,
    service: Service,
    shown: ShownRow,
    *,
    notice: str | None = None,
    problem: str | None = None,
    status_code: int = 200,
) -> Response:
    failing: dict[str, list[tuple[str, str]]] = {}
    for reason in shown.reasons:
        column = reason.partition(":")[0]
        failing.setdefault(column, []).append((reason, rule_words(reason)))
    open_row = shown.status == QuarantineStatus.QUARANTINED
    context: dict[str, Any] = {
        "row": shown,
        "failing": failing,
        "history": service.row_history(shown.id),
        "can_reveal": may(service, shown.tenant, "reveal") and not shown.revealed,
        "can_edit": open_row and may(service, shown.tenant, "fix"),
        "can_settle": open_row and may(service, shown.tenant, "release"),
        "show_reasons": may(service, shown.tenant, "reveal"),
        "notice": notice,
        "problem": problem,
        "set_prefix": SET_PREFIX,
        "blank_prefix": BLANK_PREFIX,
        "when": utc_minute,
    }
    return page(request, "row.html", context, phi=True, status_code=status_code)
