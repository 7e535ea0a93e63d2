"""Signed session cookies: who is logged in, since when, last seen, and the CSRF token.

The cookie is the whole session (no server table): signed with the session secret
(HMAC-SHA256, itsdangerous), HttpOnly, SameSite=Strict, Path=/, Secure over https,
no Max-Age (it ends with the browser). The idle and absolute timeouts are checked here
on every request against the times inside the signed value, so a replayed old cookie is
refused whatever the browser does. A logout revokes the session's id in memory (per
process, until the absolute timeout would have ended it anyway).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.cookies import SimpleCookie
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchbridge.web.settings import WorkbenchSettings

COOKIE_NAME = "batchbridge_session"
SCOPE_KEY = "batchbridge.session"
UNTOUCHED_PREFIXES = ("/static/",)
"""Requests that neither read nor refresh the session (they show nothing of a person)."""


@dataclass(frozen=True)
class SessionData:
    """One browser's session; `name` is None before login (the login form's CSRF token)."""

    sid: str
    csrf: str
    issued_at: float
    last_seen: float
    name: str | None = None
    auth_method: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The signed cookie's payload (short keys: the cookie travels with every request)."""
        return {
            "sid": self.sid,
            "csrf": self.csrf,
            "iat": self.issued_at,
            "seen": self.last_seen,
            "name": self.name,
            "am": self.auth_method,
        }

    @classmethod
    def from_json(cls, raw: object) -> SessionData | None:
        """The session in a verified payload; None for anything malformed."""
        if not isinstance(raw, dict):
            return None
        try:
            data = cls(
                sid=str(raw["sid"]),
                csrf=str(raw["csrf"]),
                issued_at=float(raw["iat"]),
                last_seen=float(raw["seen"]),
                name=None if raw.get("name") is None else str(raw["name"]),
                auth_method=None if raw.get("am") is None else str(raw["am"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return data


def new_session(
    now: float, *, name: str | None = None, auth_method: str | None = None
) -> SessionData:
    """A fresh session: new id and CSRF token (a login never keeps the anonymous ones)."""
    return SessionData(
        sid=secrets.token_urlsafe(18),
        csrf=secrets.token_urlsafe(32),
        issued_at=now,
        last_seen=now,
        name=name,
        auth_method=auth_method,
    )


class SessionManager:
    """Signs, verifies and expires sessions for one app (its secret, timeouts and clock)."""

    def __init__(
        self, settings: WorkbenchSettings, secret: str, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._serializer = URLSafeSerializer(
            secret,
            salt="batchbridge.web.session",
            signer_kwargs={"digest_method": hashlib.sha256},
        )
        self._revoked: dict[str, float] = {}

    def dumps(self, data: SessionData) -> str:
        """The cookie value for a session."""
        return str(self._serializer.dumps(data.to_json()))

    def loads(self, value: str, now: float) -> SessionData | None:
        """The session in a cookie value, or None: bad signature, expired or revoked."""
        try:
            data = SessionData.from_json(self._serializer.loads(value))
        except BadSignature:
            return None
        if data is None:
            return None
        if now - data.issued_at > self.settings.absolute_timeout_seconds:
            return None
        if now - data.last_seen > self.settings.idle_timeout_seconds:
            return None
        if data.sid in self._revoked or data.last_seen > now + 60:
            return None
        return data

    def revoke(self, data: SessionData) -> None:
        """Refuse this session id from now on (logout); forgotten once it would expire."""
        now = self.clock()
        self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
        self._revoked[data.sid] = data.issued_at + self.settings.absolute_timeout_seconds

    def cookie_header(self, data: SessionData | None, *, secure: bool) -> str:
        """A Set-Cookie value carrying `data`, or deleting the cookie when None."""
        cookie: SimpleCookie = SimpleCookie()
        cookie[COOKIE_NAME] = "" if data is None else self.dumps(data)
        morsel = cookie[COOKIE_NAME]
        morsel["path"] = "/"
        morsel["httponly"] = True
        morsel["samesite"] = "Strict"
        if secure:
            morsel["secure"] = True
        if data is None:
            morsel["max-age"] = 0
            morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
        return morsel.OutputString()


class SessionSlot:
    """The session of one request, as the handlers leave it (written back on the response)."""

    def __init__(self, data: SessionData | None, *, had_cookie: bool) -> None:
        self.data = data
        self.had_cookie = had_cookie
        self.changed = data is not None


def _slot(conn: HTTPConnection) -> SessionSlot:
    slot = conn.scope.get(SCOPE_KEY)
    if not isinstance(slot, SessionSlot):
        raise RuntimeError("SessionMiddleware is not installed")
    return slot


def get_session(conn: HTTPConnection) -> SessionData | None:
    """The request's valid session (logged in or not), if any."""
    return _slot(conn).data


def ensure_session(conn: HTTPConnection) -> SessionData:
    """The request's session, starting an anonymous one (for a CSRF token) when none."""
    slot = _slot(conn)
    if slot.data is None:
        slot.data = new_session(_manager(conn).clock())
        slot.changed = True
    return slot.data


def start_session(conn: HTTPConnection, *, name: str, auth_method: str) -> SessionData:
    """Log `name` in: a new session id and CSRF token (never the pre-login ones)."""
    slot = _slot(conn)
    if slot.data is not None:
        _manager(conn).revoke(slot.data)
    slot.data = new_session(_manager(conn).clock(), name=name, auth_method=auth_method)
    slot.changed = True
    return slot.data


def end_session(conn: HTTPConnection) -> None:
    """Log out: the session id is revoked and the cookie deleted."""
    slot = _slot(conn)
    if slot.data is not None:
        _manager(conn).revoke(slot.data)
    slot.data = None
    slot.changed = True


def _manager(conn: HTTPConnection) -> SessionManager:
    manager: SessionManager = conn.app.state.sessions
    return manager


def request_is_https(scope: Scope, settings: WorkbenchSettings) -> bool:
    """Whether cookies must be Secure: public URL on https, or the request came over TLS."""
    return settings.https or scope.get("scheme") == "https"


class SessionMiddleware:
    """Loads the session before the app and writes it back (refreshed) on the response."""

    def __init__(self, app: ASGIApp, manager: SessionManager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(UNTOUCHED_PREFIXES):
            # An empty slot that is never written back: a static file's 404 page renders.
            scope[SCOPE_KEY] = SessionSlot(None, had_cookie=False)
            await self.app(scope, receive, send)
            return
        now = self.manager.clock()
        value = HTTPConnection(scope).cookies.get(COOKIE_NAME)
        data = self.manager.loads(value, now) if value else None
        if data is not None:
            data = replace(data, last_seen=now)  # idle time counts from this request
        slot = SessionSlot(data, had_cookie=value is not None)
        scope[SCOPE_KEY] = slot
        secure = request_is_https(scope, self.manager.settings)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if slot.data is not None and slot.changed:
                    headers.append(
                        "set-cookie", self.manager.cookie_header(slot.data, secure=secure)
                    )
                elif slot.data is None and slot.had_cookie:
                    # Expired, revoked, forged or logged out: the browser forgets it too.
                    headers.append("set-cookie", self.manager.cookie_header(None, secure=secure))
            await send(message)

        await self.app(scope, receive, send_with_cookie)
