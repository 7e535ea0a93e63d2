"""CSRF tokens: one per session, checked on every state-changing request (403, nothing done).

The token lives in the signed session cookie and is sent back by forms (`csrf_token`
field) or by htmx (`X-CSRF-Token` header, set by static/app.js from the page's
`<meta name="csrf-token">`). SameSite=Strict cookies already keep other sites' forms
out; the token also covers same-site pages and older browsers.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException
from starlette.requests import Request

from batchbridge.web.identity import NotAuthenticated, identity_of, settings_of
from batchbridge.web.sessions import ensure_session, get_session

FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def csrf_token(request: Request) -> str:
    """The session's CSRF token (an anonymous session is started for the login form)."""
    return ensure_session(request).csrf


async def sent_token(request: Request) -> str | None:
    """The token the request carries: the header, else the form field."""
    header = request.headers.get(HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in FORM_TYPES:
        return None
    # Starlette caches the parsed form: the endpoint's own Form() fields read the same one.
    form = await request.form()
    value = form.get(FORM_FIELD)
    return value if isinstance(value, str) else None


async def require_csrf(request: Request) -> None:
    """FastAPI dependency for POST/PUT/PATCH/DELETE: a missing or wrong token answers 403.

    Without any session (not even the login form's) the request answers 401 instead:
    nobody is signed in, whatever it carries.
    """
    if settings_of(request).auth == "header":
        # The proxy names the person on every request: bind the session to this one
        # first, so a token issued to someone else in this browser does not count.
        identity_of(request)
    session = get_session(request)
    if session is None:
        raise NotAuthenticated()
    sent = await sent_token(request)
    if not sent or not hmac.compare_digest(sent, session.csrf):
        raise HTTPException(status_code=403, detail="csrf")
