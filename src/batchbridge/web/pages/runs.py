"""Recent runs of the person's tenants per feed: status, counts, links to the queue and Prefect."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from batchbridge.ledger.run_report import duration
from batchbridge.ledger.runs_query import RELEASE_KIND, RunSummary
from batchbridge.web.deps import Service
from batchbridge.web.identity import settings_of
from batchbridge.web.pages.forms import Name, blank_to_none, utc_minute
from batchbridge.web.render import page

router = APIRouter()

RunStatus = Annotated[str, Query(pattern="^(?:running|succeeded|failed)?$")]
Limit = Annotated[int, Query(ge=1, le=500)]


def prefect_link(ui_url: str | None, run: RunSummary) -> str | None:
    """The Prefect UI page of the run's flow run, when a UI URL is configured and known."""
    if not ui_url or not run.flow_run_id:
        return None
    return f"{ui_url.rstrip('/')}/runs/flow-run/{run.flow_run_id}"


@router.get("/runs")
def runs_page(
    request: Request,
    service: Service,
    feed: Name = None,
    status: RunStatus = "",
    limit: Limit = 100,
) -> Response:
    """The newest runs (nightly and release), grouped by feed; ids and counts only."""
    runs = service.recent_runs(feed=blank_to_none(feed), status=blank_to_none(status), limit=limit)
    by_feed: dict[str, list[RunSummary]] = defaultdict(list)
    for run in runs:
        by_feed[run.feed].append(run)
    ui_url = settings_of(request).prefect_ui_url
    context = {
        "by_feed": dict(sorted(by_feed.items())),
        "feeds": service.queue_choices().feeds,
        "feed": blank_to_none(feed),
        "status": status,
        "release_kind": RELEASE_KIND,
        "prefect_link": lambda run: prefect_link(ui_url, run),
        "when": utc_minute,
        "duration": duration,
    }
    return page(request, "runs.html", context, phi=False)
