"""The authenticated person of a request, as a FastAPI dependency (login redirect or 401)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.requests import Request

from batchbridge.config.stewards import SHARED_ACCOUNTS
from batchbridge.web.auth.header import header_identity
from batchbridge.web.sessions import get_session, start_session
from batchbridge.web.settings import AuthMode, WorkbenchSettings

MAX_NAME_LENGTH = 128
"""The audit log's actor column holds 128 characters: a longer identity could not be recorded."""


@dataclass(frozen=True)
class Identity:
    """The person acting in the browser; `name` is the actor of every audit event."""

    name: str
    auth_method: AuthMode


_KEPT_QUEUE_FILTERS = frozenset({"run", "file", "feed", "tenant", "status", "age"})
_ID_OR_CHOICE = re.compile(r"[A-Za-z0-9_-]{0,64}")


class LoginRequired(Exception):
    """Raised by `current_identity` for a page GET without a session: answered 303 to /login."""

    def __init__(self, next_path: str) -> None:
        super().__init__("login required")
        self.next_path = next_path


class NotAuthenticated(Exception):
    """Raised by `current_identity` when no person can be named: answered 401."""


def person_name(raw: str | None) -> str | None:
    """`raw` as an identity (trimmed), or None: empty, too long, control characters, shared.

    Shared logins (config.stewards.SHARED_ACCOUNTS) are not a person: every audited
    action must name one.
    """
    if raw is None:
        return None
    name = raw.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return None
    if name.lower() in SHARED_ACCOUNTS:
        return None
    return name


def settings_of(request: Request) -> WorkbenchSettings:
    """The app's settings."""
    settings: WorkbenchSettings = request.app.state.settings
    return settings


def identity_of(request: Request) -> Identity | None:
    """The request's person, or None. Never raises for a missing login.

    Header mode: the trusted proxy's header on this very request (a session only carries
    the CSRF token; a different person behind the same browser gets a new one). Other
    modes: the signed session, when it was made by the configured mode.
    """
    settings = settings_of(request)
    if settings.auth == "header":
        name = person_name(header_identity(request, settings))
        if name is None:
            return None
        session = get_session(request)
        if session is None or session.name != name or session.auth_method != "header":
            start_session(request, name=name, auth_method="header")
        return Identity(name=name, auth_method="header")
    session = get_session(request)
    if session is None or session.auth_method != settings.auth:
        return None
    name = person_name(session.name)
    return None if name is None else Identity(name=name, auth_method=settings.auth)


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def login_path(next_path: str | None) -> str:
    """`/login`, with `next` when it is a safe local path (a query only as safe_next allows)."""
    safe = safe_next(next_path)
    return "/login" if safe is None else f"/login?next={quote(safe, safe='/')}"


def safe_next(next_path: str | None) -> str | None:
    """A local absolute path to return to after login, or None (no open redirects).

    Query strings are dropped, except the queue's id and choice filters.
    """
    if not next_path or not next_path.startswith("/") or next_path.startswith("//"):
        return None
    if "\\" in next_path or any(ord(c) < 32 for c in next_path):
        return None
    parts = urlsplit(next_path)
    if parts.scheme or parts.netloc or next_path.startswith(("/login", "/logout", "/auth/")):
        return None
    if parts.path in ("/", "/queue") and parts.query:
        # The report's link `/queue?run=<id>` keeps its filter through a login: only ids
        # and choices, never a free-text filter (the reason box may hold anything).
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if all(k in _KEPT_QUEUE_FILTERS and _ID_OR_CHOICE.fullmatch(v) for k, v in pairs):
            return f"{parts.path}?{urlencode(pairs)}"
    return parts.path


def current_identity(request: Request) -> Identity:
    """FastAPI dependency: the logged-in person.

    Without one, a page GET (or HEAD) answers 303 to `/login?next=<path>` (the path only:
    a query string may hold filters); htmx requests and every other method answer 401
    (htmx gets `HX-Redirect` to the login page).
    """
    identity = identity_of(request)
    if identity is not None:
        return identity
    page_get = request.method in ("GET", "HEAD") and not _is_htmx(request)
    if page_get and settings_of(request).auth != "header":
        query = request.url.query
        raise LoginRequired(f"{request.url.path}?{query}" if query else request.url.path)
    raise NotAuthenticated()
