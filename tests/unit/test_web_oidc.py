"""OpenID Connect login against a fake provider on httpx2.MockTransport (no network).

The fake serves a discovery document, a JWKS and a token endpoint that checks the
client's credentials, the redirect URI and the PKCE verifier, and returns an RS256 ID
token (joserfc, which authlib uses itself) carrying the nonce of the authorize request.
The browser's part is played by the TestClient: it follows the app's redirect to the
provider by reading the authorize URL, and comes back to the callback with a code.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from batchbridge.web.app import create_app
from batchbridge.web.auth.oidc import PENDING_COOKIE
from batchbridge.web.settings import OidcSettings
from tests.unit.test_web_app import DANA, add_probes, make_settings

ISSUER = "https://idp.example"
CLIENT_ID = "workbench"
CLIENT_SECRET = "client-secret-value"
PUBLIC_URL = "https://workbench.example"


@dataclass
class FakeProvider:
    """An OpenID provider's three endpoints; `grants` maps codes to what was authorized."""

    key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    )
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def id_token(self, nonce: str, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "sub": "user-123",
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "email": DANA,
            "email_verified": True,
            **claims,
        }
        return jwt.encode({"alg": "RS256", "kid": "k1"}, payload, self.key)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        url = str(request.url)
        if url == f"{ISSUER}/.well-known/openid-configuration":
            return httpx2.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": f"{ISSUER}/authorize",
                    "token_endpoint": f"{ISSUER}/token",
                    "jwks_uri": f"{ISSUER}/jwks",
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "code_challenge_methods_supported": ["S256"],
                },
            )
        if url == f"{ISSUER}/jwks":
            return httpx2.Response(200, json={"keys": [self.key.as_dict(private=False)]})
        if url == f"{ISSUER}/token" and request.method == "POST":
            return self._token(request)
        return httpx2.Response(404)

    def _token(self, request: httpx2.Request) -> httpx2.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.token_requests.append(form)
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {basic}":
            return httpx2.Response(401, json={"error": "invalid_client"})
        grant = self.grants.pop(form.get("code", ""), None)
        if grant is None or form.get("redirect_uri") != f"{PUBLIC_URL}/auth/oidc/callback":
            return httpx2.Response(400, json={"error": "invalid_grant"})
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
            return httpx2.Response(400, json={"error": "invalid_grant"})
        return httpx2.Response(
            200,
            json={
                "access_token": "at",
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": grant["id_token"],
            },
        )


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


def _client(tmp_path: Path, provider: FakeProvider, claim: str = "email") -> TestClient:
    settings = make_settings(
        tmp_path,
        auth="oidc",
        session_secret="o" * 40,
        public_url=PUBLIC_URL,
        on_loopback=False,
        oidc=OidcSettings(
            metadata_url=f"{ISSUER}/.well-known/openid-configuration",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            identity_claim=claim,
        ),
    )
    app = create_app(settings, oidc_transport=httpx2.MockTransport(provider.handle))
    return TestClient(add_probes(app), base_url=PUBLIC_URL)


def _authorize(client: TestClient, next_path: str = "/probe") -> dict[str, str]:
    """Start the login; the provider's view of the authorize request."""
    response = client.get(f"/auth/oidc/start?next={next_path}", follow_redirects=False)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{ISSUER}/authorize?")
    pending = [v for k, v in response.headers.multi_items() if PENDING_COOKIE in v]
    assert pending and "Path=/auth/oidc" in pending[0] and "SameSite=lax" in pending[0]
    assert "HttpOnly" in pending[0] and "Secure" in pending[0]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _grant(provider: FakeProvider, asked: dict[str, str], code: str = "c1", **claims: Any) -> str:
    nonce = claims.pop("nonce", asked["nonce"])
    provider.grants[code] = {
        "challenge": asked["code_challenge"],
        "id_token": provider.id_token(nonce, **claims),
    }
    return code


def test_the_login_page_offers_the_provider(tmp_path: Path, provider: FakeProvider) -> None:
    client = _client(tmp_path, provider)
    assert client.get("/probe", follow_redirects=False).headers["location"] == (
        "/login?next=/probe"
    )
    assert 'href="/auth/oidc/start?next=/probe"' in client.get("/login?next=/probe").text


def test_code_flow_with_pkce_and_nonce_signs_the_person_in(
    tmp_path: Path, provider: FakeProvider
) -> None:
    client = _client(tmp_path, provider)
    asked = _authorize(client)
    assert asked["response_type"] == "code" and asked["client_id"] == CLIENT_ID
    assert asked["code_challenge_method"] == "S256" and "openid" in asked["scope"]
    assert asked["redirect_uri"] == f"{PUBLIC_URL}/auth/oidc/callback"
    code = _grant(provider, asked)
    back = client.get(f"/auth/oidc/callback?code={code}&state={asked['state']}")
    assert back.status_code == 200
    # A same-site page moves on (the Strict session cookie then travels with it).
    assert '<meta http-equiv="refresh" content="0;url=/probe">' in back.text
    cleared = [v for k, v in back.headers.multi_items() if PENDING_COOKIE in v]
    assert cleared and "Max-Age=0" in cleared[0]
    assert f"hello {DANA} via oidc" in client.get("/probe").text
    assert provider.token_requests[0]["grant_type"] == "authorization_code"


def test_a_callback_with_a_wrong_state_is_refused(tmp_path: Path, provider: FakeProvider) -> None:
    client = _client(tmp_path, provider)
    asked = _authorize(client)
    code = _grant(provider, asked)
    response = client.get(f"/auth/oidc/callback?code={code}&state=forged")
    assert response.status_code == 401
    assert provider.token_requests == []  # refused before the code is spent
    assert client.get("/probe", follow_redirects=False).status_code == 303


def test_a_callback_without_the_pending_cookie_is_refused(
    tmp_path: Path, provider: FakeProvider
) -> None:
    client = _client(tmp_path, provider)
    asked = _authorize(client)
    code = _grant(provider, asked)
    client.cookies.clear()
    response = client.get(f"/auth/oidc/callback?code={code}&state={asked['state']}")
    assert response.status_code == 401


@pytest.mark.parametrize(
    "claims",
    [
        {"nonce": "another-nonce"},
        {"aud": "some-other-client"},
        {"iss": "https://evil.example"},
        {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
        {"email_verified": False},
    ],
    ids=["nonce", "audience", "issuer", "expired", "unverified_email"],
)
def test_an_id_token_that_does_not_verify_signs_nobody_in(
    tmp_path: Path, provider: FakeProvider, claims: dict[str, Any]
) -> None:
    client = _client(tmp_path, provider)
    asked = _authorize(client)
    code = _grant(provider, asked, **claims)
    response = client.get(f"/auth/oidc/callback?code={code}&state={asked['state']}")
    assert response.status_code == 401
    assert client.get("/probe", follow_redirects=False).status_code == 303


def test_a_provider_error_is_refused_without_echoing_it(
    tmp_path: Path, provider: FakeProvider
) -> None:
    client = _client(tmp_path, provider)
    asked = _authorize(client)
    response = client.get(
        f"/auth/oidc/callback?error=access_denied&error_description=Zebulonquix"
        f"&state={asked['state']}"
    )
    assert response.status_code == 401 and "Zebulonquix" not in response.text


def test_a_shared_account_from_the_provider_is_refused(
    tmp_path: Path, provider: FakeProvider
) -> None:
    client = _client(tmp_path, provider, claim="preferred_username")
    asked = _authorize(client)
    code = _grant(provider, asked, preferred_username="admin")
    response = client.get(f"/auth/oidc/callback?code={code}&state={asked['state']}")
    assert response.status_code == 403
    assert client.get("/probe", follow_redirects=False).status_code == 303


def test_an_unreachable_provider_answers_502(tmp_path: Path) -> None:
    def down(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    provider = FakeProvider()
    provider.handle = down  # type: ignore[method-assign]
    client = _client(tmp_path, provider)
    response = client.get("/auth/oidc/start", follow_redirects=False)
    assert response.status_code == 502


def test_the_pending_state_is_signed(tmp_path: Path, provider: FakeProvider) -> None:
    client = _client(tmp_path, provider)
    asked = _authorize(client)
    raw = client.cookies.get(PENDING_COOKIE, path="/auth/oidc")
    assert raw
    # One character changed anywhere (here: in the signature) and it no longer verifies.
    # Not the last one: a base64 string's last character may carry unused bits only.
    spot = len(raw) - 4
    tampered = raw[:spot] + ("A" if raw[spot] != "A" else "B") + raw[spot + 1 :]
    client.cookies.clear()
    client.cookies.set(PENDING_COOKIE, tampered, path="/auth/oidc")
    code = _grant(provider, asked)
    response = client.get(f"/auth/oidc/callback?code={code}&state={asked['state']}")
    assert response.status_code == 401
    assert provider.token_requests == []
