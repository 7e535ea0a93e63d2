"""OpenID Connect login (authorization code + PKCE + nonce) with authlib's Starlette client.

authlib talks to the provider with httpx2 (its successor of httpx), so a test transport
is an httpx2 one.

authlib keeps the state, nonce and PKCE verifier of a login in progress in
`request.session`; here that is a short-lived signed cookie of its own (`batchbridge_oidc`,
Path=/auth/oidc, SameSite=Lax, 10 minutes) rather than the session cookie: the provider
sends the browser back cross-site, and a SameSite=Strict cookie would not come along.
The callback then answers a small same-site page that moves on to the workbench, so the
Strict session cookie it set is sent with the next request.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx2
from authlib.integrations.starlette_client import OAuth, OAuthError, StarletteOAuth2App
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from batchbridge.web.settings import OidcSettings, WorkbenchSettings

PENDING_COOKIE = "batchbridge_oidc"
COOKIE_PATH = "/auth/oidc"
PENDING_SECONDS = 600
CALLBACK_PATH = "/auth/oidc/callback"
CLIENT_NAME = "workbench"

log = logging.getLogger("batchbridge.web.auth")


class OidcLoginFailed(Exception):
    """Raised when a callback cannot name a person; `code` is a fixed word for the log."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def make_client(
    oidc: OidcSettings, *, transport: httpx2.AsyncBaseTransport | None = None
) -> StarletteOAuth2App:
    """The authlib client for the provider's discovery document (`transport`: tests)."""
    client_kwargs: dict[str, Any] = {
        "scope": oidc.scope,
        "code_challenge_method": "S256",
        "timeout": 10.0,
    }
    if transport is not None:
        client_kwargs["transport"] = transport
    oauth = OAuth()
    client = oauth.register(
        CLIENT_NAME,
        client_id=oidc.client_id,
        client_secret=oidc.client_secret,
        server_metadata_url=oidc.metadata_url,
        client_kwargs=client_kwargs,
    )
    assert isinstance(client, StarletteOAuth2App)
    return client


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="batchbridge.web.oidc")


async def start_login(
    request: Request,
    client: StarletteOAuth2App,
    settings: WorkbenchSettings,
    secret: str,
    next_path: str | None,
) -> Response:
    """Redirect to the provider; the login's state goes into the pending cookie."""
    pending: dict[str, Any] = {}
    request.scope["session"] = pending  # where authlib writes state, nonce, verifier
    redirect_uri = f"{settings.public_url}{CALLBACK_PATH}"
    response: Response = await client.authorize_redirect(request, redirect_uri)
    pending["next"] = next_path
    response.set_cookie(
        PENDING_COOKIE,
        _serializer(secret).dumps(pending),
        max_age=PENDING_SECONDS,
        path=COOKIE_PATH,
        secure=settings.https,
        httponly=True,
        samesite="lax",
    )
    return response


def _person_claim(userinfo: dict[str, Any], claim: str) -> str | None:
    if claim == "email" and userinfo.get("email_verified") is False:
        return None  # an unverified address names nobody
    value = userinfo.get(claim)
    return value if isinstance(value, str) else None


async def finish_login(
    request: Request, client: StarletteOAuth2App, oidc: OidcSettings, secret: str
) -> tuple[str, str | None]:
    """The identity claim of a verified ID token and the path to go on to.

    Raises OidcLoginFailed (state missing or expired, provider error, bad token, no
    usable claim). The provider's texts are not logged: only a fixed word for each case
    and the provider's error code when it is a plain word.
    """
    raw = request.cookies.get(PENDING_COOKIE)
    if not raw:
        raise OidcLoginFailed("no_login_in_progress")
    try:
        pending = _serializer(secret).loads(raw, max_age=PENDING_SECONDS)
    except BadSignature:
        raise OidcLoginFailed("login_state_expired_or_forged") from None
    if not isinstance(pending, dict):
        raise OidcLoginFailed("login_state_expired_or_forged")
    request.scope["session"] = pending
    try:
        token = await client.authorize_access_token(request)
    except OAuthError as exc:
        code = exc.error if re.fullmatch(r"[a-z_]{1,40}", str(exc.error or "")) else "oauth"
        raise OidcLoginFailed(f"provider:{code}") from None
    except httpx2.HTTPError as exc:
        raise OidcLoginFailed(f"provider_unreachable:{type(exc).__name__}") from None
    except Exception as exc:  # joserfc's token errors: signature, issuer, audience, expiry
        raise OidcLoginFailed(f"id_token_rejected:{type(exc).__name__}") from None
    userinfo = token.get("userinfo")
    if not isinstance(userinfo, dict):
        raise OidcLoginFailed("no_id_token")
    name = _person_claim(dict(userinfo), oidc.identity_claim)
    if name is None:
        raise OidcLoginFailed("no_identity_claim")
    next_path = pending.get("next")
    return name, next_path if isinstance(next_path, str) else None


def clear_pending(response: Response, settings: WorkbenchSettings) -> None:
    """Delete the pending-login cookie (the login is over, either way)."""
    response.delete_cookie(
        PENDING_COOKIE, path=COOKIE_PATH, secure=settings.https, httponly=True, samesite="lax"
    )
