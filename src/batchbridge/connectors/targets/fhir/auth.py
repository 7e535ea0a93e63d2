"""OAuth2 client credentials (RFC 6749 §4.4) for the FHIR target: a cached bearer token."""

from __future__ import annotations

import base64
import re
import threading
import time
import urllib.parse
from collections.abc import Callable

import httpx
from pydantic import SecretStr

from batchbridge.connectors.targets.fhir.wire import (
    RETRY_STATUSES,
    TransientHttpError,
    check_fhir_url,
    json_or_none,
)
from batchbridge.connectors.webhook import parse_retry_after
from batchbridge.errors import TargetError

_OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")  # RFC 6749 error codes


class ClientCredentials:
    """Bearer tokens by the OAuth2 client-credentials grant, cached until shortly before expiry.

    The client authenticates with HTTP Basic (`client_secret_basic`, id and secret
    form-encoded first as RFC 6749 §2.3.1 asks). A refused grant is a TargetError with
    the HTTP status and the RFC error code only; the token endpoint's 429/5xx and
    connection errors are TransientTargetError (the caller retries).
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        target: str,
        scope: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.token_url = check_fhir_url(token_url, "token_url", target)
        self.scope = scope
        self._clock = clock
        basic = ":".join(
            urllib.parse.quote_plus(part) for part in (client_id, client_secret.get_secret_value())
        )
        self._authorization = SecretStr("Basic " + base64.b64encode(basic.encode()).decode())
        self._token: SecretStr | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.fetches = 0

    def __repr__(self) -> str:
        return f"ClientCredentials(target={self.target!r}, token_url={self.token_url.host!r})"

    def token(self, client: httpx.Client) -> str:
        """A valid access token: the cached one, or a new one from the token endpoint."""
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._token, lifetime = self._fetch(client)
                # Renew a little early so a token never expires in flight.
                self._expires_at = self._clock() + max(0.0, lifetime - min(30.0, lifetime / 10))
            return self._token.get_secret_value()

    def invalidate(self, token: str) -> None:
        """Forget `token` (the server refused it); a newer cached token is kept."""
        with self._lock:
            if self._token is not None and self._token.get_secret_value() == token:
                self._token = None

    def _fetch(self, client: httpx.Client) -> tuple[SecretStr, float]:
        where = f"target {self.target}: token endpoint at {self.token_url.host}"
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        try:
            response = client.post(
                self.token_url,
                data=form,
                headers={
                    "Authorization": self._authorization.get_secret_value(),
                    "Accept": "application/json",
                },
            )
        except httpx.TransportError as exc:
            raise TransientHttpError(f"{where}: {type(exc).__name__}") from None
        self.fetches += 1
        status = response.status_code
        if status in RETRY_STATUSES or status >= 500:
            raise TransientHttpError(
                f"{where}: HTTP {status}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        body = json_or_none(response)
        if status != 200:
            error = body.get("error") if isinstance(body, dict) else None
            code = f", {error}" if isinstance(error, str) and _OAUTH_ERROR.match(error) else ""
            raise TargetError(
                f"{where} refused the client credentials (HTTP {status}{code})",
                reason="target_auth_failed",
            )
        token = body.get("access_token") if isinstance(body, dict) else None
        kind = body.get("token_type", "") if isinstance(body, dict) else ""
        if not isinstance(token, str) or not token or str(kind).lower() != "bearer":
            raise TargetError(f"{where}: the answer holds no bearer access_token")
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 300.0
        return SecretStr(token), max(0.0, lifetime)
