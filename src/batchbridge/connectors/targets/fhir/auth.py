"""OAuth2 client credentials (RFC 6749 §4.4) for the FHIR target, through authlib's httpx client.

authlib (`authlib.integrations.httpx_client.OAuth2Client`, grant_type client_credentials)
builds the token request, authenticates the client, parses the answer and keeps the token
with its expiry (`OAuth2Token.is_expired`). What stays here: its requests travel through
the target's own httpx client (one TLS setup, one pool, the tests' MockTransport), the
answers are sorted into our error tree before authlib reads them, and no error text ever
carries `error_description`, a token or the secret.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
from typing import Any

import httpx
import httpx2
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from pydantic import SecretStr

from batchbridge.connectors.targets.fhir.wire import (
    RETRY_STATUSES,
    TransientHttpError,
    check_fhir_url,
)
from batchbridge.connectors.webhook import parse_retry_after
from batchbridge.errors import TargetError

_OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")  # RFC 6749 error codes
_ASSUMED_LIFETIME = 300.0
"""Seconds a token is trusted when the answer has no expires_in (RFC 6749 leaves it open)."""
_MAX_LEEWAY = 30.0
# Headers httpx sets itself for the request it sends, or has already undone in the answer.
_REQUEST_OWN = frozenset({"host", "content-length", "connection", "transfer-encoding"})
_REQUEST_OWN |= {"accept-encoding", "user-agent"}
_ANSWER_UNDONE = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class _ThroughHttpx(httpx2.BaseTransport):
    """authlib's client speaks httpx2; its requests go out through the target's httpx client."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        headers = [
            (name, value)
            for name, value in request.headers.multi_items()
            if name.lower() not in _REQUEST_OWN
        ]
        answer = self._client.request(
            request.method, str(request.url), headers=headers, content=request.read()
        )
        return httpx2.Response(
            answer.status_code,
            headers=[
                (name, value)
                for name, value in answer.headers.multi_items()
                if name.lower() not in _ANSWER_UNDONE
            ],
            content=answer.content,
            request=request,
        )

    def close(self) -> None:
        """The target closes its own client."""


def _basic_form_encoded(
    auth: Any, method: str, uri: str, headers: dict[str, str], body: Any
) -> tuple[str, dict[str, str], Any]:
    """`client_secret_basic` as RFC 6749 §2.3.1 has it: id and secret form-encoded first.

    (authlib's own method skips the encoding.) The secret is unwrapped only here.
    """
    secret: SecretStr = auth.client_secret
    pair = ":".join(
        urllib.parse.quote_plus(part) for part in (auth.client_id, secret.get_secret_value())
    )
    headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return uri, headers, body


def _oauth_error_code(response: httpx2.Response) -> str:
    """`, <error>` when the answer names an RFC 6749 error code; never its description."""
    try:
        body = json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return f", {error}" if isinstance(error, str) and _OAUTH_ERROR.match(error) else ""


class ClientCredentials:
    """Bearer tokens by the OAuth2 client-credentials grant, cached until shortly before expiry.

    The client authenticates with HTTP Basic (`client_secret_basic`, id and secret
    form-encoded first as RFC 6749 §2.3.1 asks). A token is renewed `min(30 s, a tenth
    of its lifetime)` before it expires, and whenever the FHIR server refuses it
    (`invalidate`). A refused grant is a TargetError with the HTTP status and the RFC
    error code only; the token endpoint's 429/5xx and connection errors are
    TransientTargetError (the caller retries).
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        target: str,
        scope: str | None = None,
    ) -> None:
        self.target = target
        self.token_url = check_fhir_url(token_url, "token_url", target)
        self.scope = scope
        self._client_id = client_id
        self._client_secret = client_secret
        self._where = f"target {target}: token endpoint at {self.token_url.host}"
        self._oauth: OAuth2Client | None = None
        self._wire: httpx.Client | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def __repr__(self) -> str:
        return f"ClientCredentials(target={self.target!r}, token_url={self.token_url.host!r})"

    def token(self, client: httpx.Client) -> str:
        """A valid access token: the cached one, or a new one fetched through `client`."""
        with self._lock:
            oauth = self._session(client)
            current = oauth.token
            if not current or current.is_expired(leeway=oauth.leeway):
                self._fetch(oauth)
            return str(oauth.token["access_token"])

    def invalidate(self, token: str) -> None:
        """Forget `token` (the server refused it); a newer cached token is kept."""
        with self._lock:
            current = self._oauth.token if self._oauth is not None else None
            if current and current.get("access_token") == token:
                self._oauth.token = None  # type: ignore[union-attr]

    def close(self) -> None:
        """Drop authlib's client (the connections belong to the target's client)."""
        with self._lock:
            if self._oauth is not None:
                self._oauth.close()
            self._oauth, self._wire = None, None

    def _session(self, client: httpx.Client) -> OAuth2Client:
        if self._oauth is None or self._wire is not client:
            if self._oauth is not None:
                self._oauth.close()
            oauth = OAuth2Client(
                client_id=self._client_id,
                client_secret=self._client_secret,  # unwrapped by _basic_form_encoded only
                token_endpoint_auth_method=_basic_form_encoded,
                scope=self.scope,
                token_endpoint=str(self.token_url),
                grant_type="client_credentials",
                transport=_ThroughHttpx(client),
                trust_env=False,
                follow_redirects=False,
            )
            oauth.register_compliance_hook("access_token_response", self._sort_answer)
            self._oauth, self._wire = oauth, client
        return self._oauth

    def _sort_answer(self, response: httpx2.Response) -> httpx2.Response:
        """Busy or failing endpoints are transient, a refusal is ours; 200s go on to authlib."""
        self.fetches += 1
        status = response.status_code
        if status in RETRY_STATUSES or status >= 500:
            raise TransientHttpError(
                f"{self._where}: HTTP {status}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status != 200:
            raise TargetError(
                f"{self._where} refused the client credentials "
                f"(HTTP {status}{_oauth_error_code(response)})",
                reason="target_auth_failed",
            )
        return response

    def _fetch(self, oauth: OAuth2Client) -> None:
        try:
            token = oauth.fetch_token(grant_type="client_credentials")
        except httpx.TransportError as exc:
            # The class names the problem; its text may quote the URL.
            raise TransientHttpError(f"{self._where}: {type(exc).__name__}") from None
        except OAuthError as exc:
            # Its description is the server's free text: only the code is kept.
            error = exc.error if isinstance(exc.error, str) else ""
            code = f", {error}" if _OAUTH_ERROR.match(error) else ""
            raise TargetError(
                f"{self._where} refused the client credentials (HTTP 200{code})",
                reason="target_auth_failed",
            ) from None
        except (ValueError, httpx2.HTTPError):
            raise TargetError(f"{self._where}: the answer holds no bearer access_token") from None
        access = token.get("access_token")
        kind = str(token.get("token_type", "")).lower()
        if not isinstance(access, str) or not access or kind != "bearer":
            oauth.token = None
            raise TargetError(f"{self._where}: the answer holds no bearer access_token")
        try:
            lifetime = max(0.0, float(token.get("expires_in")))
        except (TypeError, ValueError):
            lifetime = _ASSUMED_LIFETIME
        if not isinstance(token.get("expires_at"), int):
            token["expires_at"] = int(time.time() + lifetime)
        # Renew a little early so a token never expires in flight.
        oauth.leeway = min(_MAX_LEEWAY, lifetime / 10)
