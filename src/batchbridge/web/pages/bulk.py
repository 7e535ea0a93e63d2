"""Bulk release and discard by feed, file and reason: a confirmation page with counts, then POST.

GET /bulk/{action} counts what would be taken (audited as a listing, refused to a
viewer); only the POST from that page, with its CSRF token, acts. The release runs the
CLI's path (steward.release.release_rows) and shows what it did; a release that
releases nothing says so.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form
from starlette.requests import Request
from starlette.responses import Response

from batchbridge.steward.release import release_rows
from batchbridge.steward.release_report import ReleaseReport
from batchbridge.steward.rule_words import rule_words
from batchbridge.web.deps import CsrfChecked, Service
from batchbridge.web.error_pages import error_page
from batchbridge.web.pages.forms import (
    ID,
    NAME,
    REASON,
    IdText,
    Name,
    Reason,
    blank_to_none,
    full_id,
    optional,
    why_text,
)
from batchbridge.web.render import page

router = APIRouter()

Action = Literal["release", "discard"]


FormName = Annotated[str, Form(pattern=optional(NAME))]
FormId = Annotated[str, Form(pattern=optional(ID))]
FormReason = Annotated[str, Form(pattern=optional(REASON))]
FormWhy = Annotated[str, Form(max_length=2000)]


@router.get("/bulk/{action}")
def confirm(
    request: Request,
    service: Service,
    action: Action,
    feed: Name = None,
    file: IdText = None,
    reason: Reason = None,
) -> Response:
    """How many rows a release or discard would take, by file and reason; nothing changes."""
    file_id, problem = full_id(service, "file", blank_to_none(file))
    if problem:
        return error_page(request, 404)
    chosen = service.bulk_selection(
        action, feed=blank_to_none(feed), file_id=file_id, reason=blank_to_none(reason)
    )
    context: dict[str, Any] = {
        "action": action,
        "selection": chosen,
        "rule_words": rule_words,
        "problem": None,
    }
    return page(request, "bulk_confirm.html", context, phi=False)


@router.post("/bulk/{action}", dependencies=[CsrfChecked])
def act(
    request: Request,
    service: Service,
    action: Action,
    feed: FormName = "",
    file: FormId = "",
    reason: FormReason = "",
    why: FormWhy = "",
) -> Response:
    """Release or discard the selection (re-selected now: rows settled meanwhile drop out)."""
    file_id, problem = full_id(service, "file", blank_to_none(file))
    if problem:
        return error_page(request, 404)
    feed_name = blank_to_none(feed)
    back = "/queue?" + urlencode([(k, v) for k, v in (("feed", feed_name), ("file", file_id)) if v])
    if feed_name is not None and feed_name not in service.queue_choices().feeds:
        # Not a feed with rows among the person's tenants: nothing to take, as for a
        # missing feed (another tenant's feed name is not confirmed either).
        return release_result(request, ReleaseReport(), back=back)
    why_given = why_text(why, required=action == "discard", what=f"a {action}")
    if action == "release":
        report = release_rows(
            service, feed=feed_name, file_id=file_id, reason=blank_to_none(reason), why=why_given
        )
        return release_result(request, report, back=back)
    assert why_given is not None
    discarded = service.bulk_discard(
        feed=feed_name, file_id=file_id, reason=blank_to_none(reason), why=why_given
    )
    context = {"report": None, "discarded": len(discarded), "back": back, "rule_words": rule_words}
    return page(request, "bulk_result.html", context, phi=False)


def release_result(request: Request, report: ReleaseReport, *, back: str) -> Response:
    """What a release did, per run and file: released, still failing per reason, errors."""
    context = {"report": report, "discarded": None, "back": back, "rule_words": rule_words}
    return page(request, "bulk_result.html", context, phi=False)
