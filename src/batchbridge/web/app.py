"""The workbench's ASGI app: login, pages, static files, security headers, error pages."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from batchbridge.web.auth import routes as auth_routes
from batchbridge.web.auth.local import load_users
from batchbridge.web.auth.oidc import make_client
from batchbridge.web.auth.ratelimit import LoginLimiter
from batchbridge.web.error_pages import install_error_handlers
from batchbridge.web.pages import ROUTERS
from batchbridge.web.render import make_environment
from batchbridge.web.security import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    UnexpectedErrorMiddleware,
)
from batchbridge.web.sessions import SessionManager, SessionMiddleware
from batchbridge.web.settings import WorkbenchSettings, check_settings

STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    settings: WorkbenchSettings,
    *,
    clock: Callable[[], float] = time.time,
    oidc_transport: httpx2.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The workbench app for `settings` (checked first: ConfigError when unusable).

    `clock` (seconds since the epoch) drives session timeouts and the login limit;
    `oidc_transport` routes the OpenID Connect client's HTTP calls (tests: a fake
    provider on httpx2.MockTransport). No API docs or OpenAPI schema are served.
    """
    check_settings(settings)
    if settings.auth == "local":
        assert settings.local_users_file is not None
        load_users(settings.local_users_file)  # a missing or wrong file stops the start
    # Generated per start only for the local (demo) login: check_settings demands a
    # configured secret for the others. Sessions then end with the process.
    secret = settings.session_secret or secrets.token_urlsafe(32)
    sessions = SessionManager(settings, secret, clock)
    app = FastAPI(
        title="batchbridge steward workbench",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # Listed outermost first: headers wrap everything, including the 500 page.
        middleware=[
            Middleware(SecurityHeadersMiddleware, https=settings.https),
            Middleware(AccessLogMiddleware),
            Middleware(BodyLimitMiddleware),
            Middleware(UnexpectedErrorMiddleware),
            Middleware(SessionMiddleware, manager=sessions),
        ],
    )
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.session_secret = secret
    app.state.templates = make_environment()
    app.state.login_limiter = LoginLimiter(
        max_failures=settings.login_max_failures,
        window_seconds=settings.login_window_seconds,
        clock=clock,
    )
    app.state.oidc_client = (
        make_client(settings.oidc, transport=oidc_transport)
        if settings.auth == "oidc" and settings.oidc is not None
        else None
    )
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(auth_routes.router)
    for router in ROUTERS:
        app.include_router(router)
    app.add_api_route("/", _home, methods=["GET"], include_in_schema=False)
    app.add_api_route("/healthz", _healthz, methods=["GET"], include_in_schema=False)
    return app


def _home() -> Response:
    return RedirectResponse(auth_routes.HOME, status_code=303)


def _healthz() -> Response:
    """For the demo and the browser tests to wait on: answers without a login."""
    return PlainTextResponse("ok")
