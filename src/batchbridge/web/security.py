"""Headers on every response, an access log without PHI, and a 500 that says a class name only.

- Content-Security-Policy without `unsafe-inline` (no inline scripts or styles anywhere),
  no framing, no referrer, no sniffing; HSTS when the public URL is https.
- `Cache-Control: no-store` on every response outside /static: any page may show a row.
- The access log is ours (uvicorn's is off): method, route template (`/rows/{row_id}`,
  never the query string, which may hold filters) and status.
- Request bodies are capped (MAX_BODY_BYTES, 413): the forms are small, and a login
  form must not be a way to fill the server's memory.
- An unexpected exception is logged with its class name and frames, never its message
  (library errors quote the data they choked on), and answered with the 500 page; it is
  not re-raised, so the server does not log the message either.
"""

from __future__ import annotations

import logging
import time
import traceback

from fastapi import HTTPException
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchbridge.web.error_pages import internal_error_response

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000"
MAX_BODY_BYTES = 1024 * 1024
STATIC_PREFIX = "/static/"

access_log = logging.getLogger("batchbridge.web.access")
error_log = logging.getLogger("batchbridge.web.error")


class SecurityHeadersMiddleware:
    """Adds SECURITY_HEADERS (and no-store outside /static) to every HTTP response."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if self.https:
                    headers["Strict-Transport-Security"] = HSTS
                if not static:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def route_template(scope: Scope) -> str:
    """The matched route's path template (ids as `{name}`), or a fixed word when none."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    if scope["path"].startswith(STATIC_PREFIX):
        return STATIC_PREFIX + "{path}"
    return "(no route)"


class AccessLogMiddleware:
    """One log line per request: method, route template, status, milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            access_log.info(
                "%s %s %d %.0fms",
                scope["method"],
                route_template(scope),
                status,
                (time.perf_counter() - started) * 1000,
            )


class UnexpectedErrorMiddleware:
    """Turns an exception nobody handled into the 500 page (class name only), logged safely."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except Exception as exc:
            name = type(exc).__name__
            frames = "".join(traceback.format_tb(exc.__traceback__))
            error_log.error(
                "%s %s failed with %s (message withheld)\n%s",
                scope["method"],
                route_template(scope),
                name,
                frames,
            )
            if started:
                return  # too late for an error page; the client sees a cut response
            response = internal_error_response(scope, name)
            await response(scope, receive, send)


class BodyLimitMiddleware:
    """Answers 413 for a body over `limit` bytes: by Content-Length, or counted as it comes.

    A chunked body is counted while the app reads it; past the limit the read raises
    HTTPException(413), which FastAPI passes through to the error page.
    """

    def __init__(self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await PlainTextResponse("request too large", status_code=413)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(status_code=413)
            return message

        await self.app(scope, counting_receive, send)
