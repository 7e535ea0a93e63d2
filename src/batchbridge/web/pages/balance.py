"""A file's balance from the ledger: read = loaded first + after fix + quarantined + discarded."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import Response

from batchbridge.errors import AccessDeniedError, StewardError
from batchbridge.web.deps import Service
from batchbridge.web.error_pages import error_page
from batchbridge.web.pages.forms import ID, full_id, may
from batchbridge.web.render import page

router = APIRouter()

FileId = Annotated[str, Path(pattern=f"^{ID}$")]


@router.get("/files/{file_id}")
def balance(request: Request, service: Service, file_id: FileId) -> Response:
    """The balance (audited as a report); another tenant's file is a 404 like a missing one."""
    found, problem = full_id(service, "file", file_id)
    if problem or found is None:
        return error_page(request, 404)
    try:
        counts = service.file_balance(found)
    except AccessDeniedError:
        raise
    except StewardError:
        return error_page(request, 404)  # as a missing file: ids cannot be probed
    context = {"balance": counts, "can_act": may(service, counts.tenant, "release")}
    return page(request, "balance.html", context, phi=False)
