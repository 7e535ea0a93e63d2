"""The queue: the rows a person may see, filtered, counted by reason, paged; record-id search.

Filters are GET parameters (ids, codes, statuses); the record-id search is a POST form,
so the id never appears in a URL, browser history or a proxy log, and the page that
answers does not repeat it. Values are never listed: ids, positions, statuses, reasons.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from batchbridge.errors import StewardError
from batchbridge.steward.queue import AGE_FILTERS, MAX_PAGE, age_bounds, quarantined_age
from batchbridge.steward.rule_words import rule_words
from batchbridge.web.deps import CsrfChecked, Service
from batchbridge.web.pages.forms import (
    STATUSES,
    IdText,
    Name,
    Offset,
    QueueFilters,
    Reason,
    Status,
    blank_to_none,
    full_id,
    may,
    optional,
    record_id_text,
)
from batchbridge.web.render import page

router = APIRouter()

PAGE_SIZES = (25, 50, 100, 200)
AGE_CODES = "|".join(code for code in AGE_FILTERS if code)
Age = Annotated[str, Query(pattern=optional(AGE_CODES))]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


@router.get("/queue")
@router.get("/")
def queue_page(
    request: Request,
    service: Service,
    tenant: Name = None,
    feed: Name = None,
    file: IdText = None,
    run: IdText = None,
    reason: Reason = None,
    status: Status = "quarantined",
    age: Age = "",
    offset: Offset = 0,
    limit: Limit = 50,
) -> Response:
    """The queue, filtered by GET parameters (every look audited as a listing)."""
    filters = QueueFilters(
        tenant=blank_to_none(tenant),
        feed=blank_to_none(feed),
        file=blank_to_none(file),
        run=blank_to_none(run),
        reason=blank_to_none(reason),
        status=status or "quarantined",
        age=age,
    )
    return _queue(request, service, filters, offset=offset, limit=limit)


@router.post("/queue/search", dependencies=[CsrfChecked])
async def record_search(request: Request, service: Service) -> Response:
    """Rows (any status) whose record id is exactly the one typed in (an audited search)."""
    form = await request.form()
    try:
        record_id = record_id_text(form.get("record_id"))
    except StewardError as exc:
        return _queue(request, service, QueueFilters(), problems=[str(exc)], status_code=400)
    return _queue(request, service, QueueFilters(status="all"), record_id=record_id, limit=MAX_PAGE)


def _queue(
    request: Request,
    service: Service,
    filters: QueueFilters,
    *,
    offset: int = 0,
    limit: int = 50,
    record_id: str | None = None,
    problems: list[str] | None = None,
    status_code: int = 200,
) -> Response:
    problems = list(problems or [])
    run_id, run_problem = full_id(service, "run", filters.run)
    file_id, file_problem = full_id(service, "file", filters.file)
    problems += [p for p in (run_problem, file_problem) if p]
    choices = service.queue_choices()
    listed = None
    if not problems:
        older, newer = age_bounds(filters.age)
        listed = service.queue(
            tenant=filters.tenant,
            feed=filters.feed,
            file_id=file_id,
            run_id=run_id,
            reason=filters.reason,
            status=None if filters.status == "all" else filters.status,
            older_than=older,
            newer_than=newer,
            record_id=record_id,
            offset=offset,
            limit=limit,
        )
    tenants = [filters.tenant] if filters.tenant else choices.tenants
    context: dict[str, Any] = {
        "filters": filters,
        "choices": choices,
        "statuses": STATUSES,
        "ages": [(code, label) for code, (label, _, _) in AGE_FILTERS.items()],
        "page_sizes": PAGE_SIZES,
        "listed": listed,
        "problems": problems,
        "searched": record_id is not None,
        "age_of": quarantined_age,
        "rule_words": rule_words,
        "can_act": any(may(service, t, "release") for t in tenants),
        "bulk_query": _bulk_query(filters, file_id),
        "pages": _pages(filters, listed.total if listed else 0, offset, limit),
        "limit": limit,
    }
    return page(request, "queue.html", context, phi=False, status_code=status_code)


def _bulk_query(filters: QueueFilters, file_id: str | None) -> str | None:
    """`?feed=…&file=…&reason=…` for the bulk pages, when the filters name a feed or file."""
    if not (filters.feed or file_id):
        return None
    parts = [("feed", filters.feed), ("file", file_id), ("reason", filters.reason)]
    return "?" + urlencode([(k, v) for k, v in parts if v])


def _pages(filters: QueueFilters, total: int, offset: int, limit: int) -> dict[str, Any]:
    """Previous and next page links, and which rows this page shows."""
    size = None if limit == 50 else limit
    return {
        "first": offset + 1 if total else 0,
        "last": min(offset + limit, total),
        "total": total,
        "prev": filters.query(offset=max(offset - limit, 0) or None, limit=size)
        if offset > 0
        else None,
        "next": filters.query(offset=offset + limit, limit=size)
        if offset + limit < total
        else None,
    }
