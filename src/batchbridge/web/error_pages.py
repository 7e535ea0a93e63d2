"""Error pages: fixed words per status, never the request's input, a class name for a 500.

Steward errors carry their own message (written PHI-free, as the CLI prints them); a
row of another tenant answers exactly like a missing row (404, same page).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import Scope

from batchbridge.errors import (
    AccessDeniedError,
    BatchbridgeError,
    QuarantineRowNotFoundError,
    RowStateError,
    StewardError,
)
from batchbridge.web.identity import LoginRequired, NotAuthenticated, login_path
from batchbridge.web.render import page

log = logging.getLogger("batchbridge.web.error")

TEXTS = {
    400: "The request was not valid.",
    401: "You are not signed in, or your sign-in could not be checked.",
    403: "You may not do this.",
    404: "Nothing here: no such page, or nothing you may see.",
    405: "This address does not take that kind of request.",
    409: "This cannot be done in the current state.",
    413: "The request is too large.",
    429: "Too many attempts. Wait a few minutes and try again.",
    500: "Something went wrong on the server.",
    502: "The sign-in provider could not be reached. Try again later.",
}
CSRF_TEXT = "The form was out of date or did not come from this site. Reload the page and retry."
TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Forbidden",
    404: "Not found",
    405: "Not allowed",
    409: "Conflict",
    413: "Too large",
    429: "Too many attempts",
    500: "Server error",
    502: "Provider unreachable",
}


def _context(status: int, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "title": TITLES.get(status, "Error"),
        "message": message,
        "fields": [],
        "class_name": None,
        **(extra or {}),
    }


def error_page(
    request: Request,
    status: int,
    message: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> HTMLResponse:
    """The error page for `status`: `message` must never quote the request's input."""
    text = message or TEXTS.get(status, TEXTS[400])
    response = page(
        request, "error.html", _context(status, text, extra), phi=True, status_code=status
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def internal_error_response(scope: Scope, class_name: str) -> HTMLResponse:
    """The 500 page outside any handler: no session, identity or navigation is read."""
    env = scope["app"].state.templates
    html = env.get_template("error.html").render(
        request=Request(scope),
        identity=None,
        csrf_token="",
        nav=[],
        prefect_ui_url=None,
        **_context(500, TEXTS[500], {"class_name": class_name}),
    )
    return HTMLResponse(html, status_code=500, headers={"Cache-Control": "no-store"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = (
        exc.status_code if exc.status_code in TEXTS else (500 if exc.status_code >= 500 else 400)
    )
    message = CSRF_TEXT if status == 403 and exc.detail == "csrf" else None
    return error_page(request, status, message, headers=dict(exc.headers or {}))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Field names come from the code; the values (exc.errors()["input"]) never leave here.
    fields = sorted({str(err["loc"][-1]) for err in exc.errors() if err.get("loc")})
    return error_page(request, 400, extra={"fields": fields})


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(login_path(exc.next_path), status_code=303)


async def _not_authenticated(request: Request, exc: Exception) -> Response:
    headers = {}
    if request.headers.get("hx-request") == "true":
        headers["HX-Redirect"] = "/login"
    return error_page(request, 401, headers=headers)


async def _steward_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BatchbridgeError)
    if isinstance(exc, QuarantineRowNotFoundError):
        return error_page(request, 404)  # same page as a missing row or page
    if isinstance(exc, AccessDeniedError):
        return error_page(request, 403, str(exc))
    if isinstance(exc, RowStateError):
        return error_page(request, 409, str(exc))
    if isinstance(exc, StewardError):
        return error_page(request, 400, str(exc))
    # Setup problems (ledger missing, stewards file unreadable): the operator reads the
    # log; the page names the class and the stable reason code only.
    log.error("%s (%s): %s", type(exc).__name__, exc.reason, exc)
    return error_page(request, 500, extra={"class_name": f"{type(exc).__name__} ({exc.reason})"})


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler above on `app`."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(NotAuthenticated, _not_authenticated)
    app.add_exception_handler(BatchbridgeError, _steward_error)
