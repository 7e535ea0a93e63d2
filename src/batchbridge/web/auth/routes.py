"""Login, logout and the OpenID Connect round trip: /login, /logout, /auth/oidc/*."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from batchbridge.web.auth import oidc
from batchbridge.web.auth.local import check_password, load_users
from batchbridge.web.auth.ratelimit import LoginLimiter
from batchbridge.web.csrf import require_csrf
from batchbridge.web.error_pages import error_page
from batchbridge.web.identity import identity_of, person_name, safe_next, settings_of
from batchbridge.web.render import page
from batchbridge.web.sessions import end_session, start_session
from batchbridge.web.settings import is_loopback

HOME = "/queue"
MAX_PASSWORD = 1024

log = logging.getLogger("batchbridge.web.auth")
router = APIRouter()


def _login_page(
    request: Request, next_path: str | None, *, error: str | None = None, status_code: int = 200
) -> Response:
    context = {
        "mode": settings_of(request).auth,
        "next": next_path or "",
        "error": error,
        "signed_in": False,
    }
    return page(request, "login.html", context, phi=False, status_code=status_code)


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in page (already signed in: on to `next`)."""
    target = safe_next(next)
    if identity_of(request) is not None:
        return RedirectResponse(target or HOME, status_code=303)
    return _login_page(request, target)


def _client_host(request: Request) -> str:
    return request.client.host if request.client is not None else ""


@router.post("/login")
async def login_submit(
    request: Request,
    username: Annotated[str, Form(max_length=254)] = "",
    password: Annotated[str, Form(max_length=MAX_PASSWORD)] = "",
    next: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    """Check a local user's password: rate-limited per address and user name."""
    settings = settings_of(request)
    if settings.auth != "local":
        return error_page(request, 404)
    await require_csrf(request)
    if not settings.on_loopback or not is_loopback(_client_host(request)):
        log.warning("local login refused: client not on loopback")
        return error_page(request, 403, "The local login is for this machine only.")
    limiter: LoginLimiter = request.app.state.login_limiter
    user_key = f"user:{username.strip().lower()}"
    keys = [f"addr:{_client_host(request)}", user_key]
    wait = limiter.retry_after(keys)
    if wait is not None:
        log.warning("login refused: too many failures (local)")
        return error_page(request, 429, headers={"Retry-After": str(wait)})
    assert settings.local_users_file is not None  # check_settings
    users = load_users(settings.local_users_file)
    person = check_password(users, username, password) if username and password else None
    name = person_name(person)
    if name is None:
        limiter.failed(keys)
        log.info("login failed (local)")  # no user name: it may be a password typed there
        return _login_page(
            request, safe_next(next), error="Wrong user name or password.", status_code=401
        )
    limiter.succeeded(user_key)
    start_session(request, name=name, auth_method="local")
    return RedirectResponse(safe_next(next) or HOME, status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the workbench session (header mode: the proxy's own session stays)."""
    await require_csrf(request)
    end_session(request)
    return RedirectResponse("/login", status_code=303)


@router.get("/auth/oidc/start")
async def oidc_start(request: Request, next: str | None = None) -> Response:
    """Off to the OpenID Connect provider."""
    settings = settings_of(request)
    client = request.app.state.oidc_client
    if settings.auth != "oidc" or client is None:
        return error_page(request, 404)
    try:
        return await oidc.start_login(
            request, client, settings, request.app.state.session_secret, safe_next(next)
        )
    except Exception as exc:  # discovery document unreachable or unusable
        log.error("oidc: provider not usable (%s)", type(exc).__name__)
        return error_page(request, 502)


@router.get(oidc.CALLBACK_PATH)
async def oidc_callback(request: Request) -> Response:
    """Back from the provider: a verified ID token names the person."""
    settings = settings_of(request)
    client = request.app.state.oidc_client
    if settings.auth != "oidc" or client is None or settings.oidc is None:
        return error_page(request, 404)
    try:
        claimed, next_path = await oidc.finish_login(
            request, client, settings.oidc, request.app.state.session_secret
        )
    except oidc.OidcLoginFailed as exc:
        log.warning("oidc login failed: %s", exc.code)
        response = error_page(request, 401)
        oidc.clear_pending(response, settings)
        return response
    name = person_name(claimed)
    if name is None:
        log.warning("oidc login refused: not a person's identity")
        response = error_page(request, 403, "This sign-in does not name a person.")
    else:
        start_session(request, name=name, auth_method="oidc")
        # A same-site page moves on: the Strict cookie is not sent on the cross-site hop.
        context = {
            "mode": "oidc",
            "next": safe_next(next_path) or HOME,
            "error": None,
            "signed_in": True,
        }
        response = page(request, "login.html", context, phi=False)
    oidc.clear_pending(response, settings)
    return response
