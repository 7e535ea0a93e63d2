"""The workbench app: login redirect, CSRF, security headers, error pages, access log, static.

Also the helpers the other test_web_* modules use: a local-login app with two probe
routes (a page behind `current_identity`, a POST behind `require_csrf`), a settable
clock and a logged-in TestClient.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse

from batchbridge.web import render
from batchbridge.web.app import create_app
from batchbridge.web.auth import routes as auth_routes
from batchbridge.web.deps import CsrfChecked, CurrentIdentity
from batchbridge.web.pages import ROUTERS
from batchbridge.web.security import CSP
from batchbridge.web.settings import WorkbenchSettings

DANA = "dana.steward@acme-health.example"
PASSWORD = "correct horse battery staple"
CANARY = "Zebulonquix"
LOOPBACK = ("127.0.0.1", 50000)
TEMPLATES = Path(render.__file__).parent / "templates"
# Cheap argon2id parameters: verification reads them from the hash, so tests stay fast.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


class Clock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_users(path: Path, people: dict[str, str] | None = None) -> Path:
    people = people or {DANA: PASSWORD}
    lines = ["users:"] + [f"  {p}: '{FAST_HASHER.hash(pw)}'" for p, pw in people.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_settings(tmp_path: Path, **overrides: Any) -> WorkbenchSettings:
    users = tmp_path / "web-users.yaml"
    if not users.exists():
        write_users(users)
    values: dict[str, Any] = {
        "config_dir": tmp_path / "feeds",
        "database_url": f"sqlite:///{tmp_path / 'none.db'}",
        "local_users_file": users,
    }
    values.update(overrides)
    return WorkbenchSettings(**values)


def add_probes(app: FastAPI) -> FastAPI:
    """/probe (page for the logged-in person), /probe/{n}, POST /probe (CSRF), /boom (500)."""

    def probe_page(request: Request, identity: CurrentIdentity) -> HTMLResponse:
        context = {
            "status": 200,
            "title": "Probe",
            "message": f"hello {identity.name} via {identity.auth_method}",
            "fields": [],
            "class_name": None,
        }
        return render.page(request, "error.html", context, phi=True)

    def probe_row(row_id: int, identity: CurrentIdentity) -> PlainTextResponse:
        return PlainTextResponse(f"row {row_id} for {identity.name}")

    def probe_post(identity: CurrentIdentity) -> PlainTextResponse:
        app.state.posted.append(identity.name)
        return PlainTextResponse("done")

    def boom(identity: CurrentIdentity) -> PlainTextResponse:
        raise ValueError(f"cell {CANARY} does not parse")

    app.state.posted = []
    app.add_api_route("/probe", probe_page, methods=["GET"])
    app.add_api_route("/probe/{row_id}", probe_row, methods=["GET"])
    app.add_api_route("/probe", probe_post, methods=["POST"], dependencies=[CsrfChecked])
    app.add_api_route("/boom", boom, methods=["GET"])
    return app


def local_app(tmp_path: Path, clock: Clock | None = None, **overrides: Any) -> FastAPI:
    return add_probes(create_app(make_settings(tmp_path, **overrides), clock=clock or Clock()))


def meta_csrf(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]*)"', html)
    assert found, html
    return found.group(1)


def login(
    client: TestClient, name: str = DANA, password: str = PASSWORD, next_path: str = "/probe"
):  # type: ignore[no-untyped-def]
    token = meta_csrf(client.get("/login").text)
    return client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": token, "next": next_path},
        follow_redirects=False,
    )


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return TestClient(local_app(tmp_path), client=LOOPBACK)


@pytest.fixture
def dana(client: TestClient) -> TestClient:
    assert login(client).status_code == 303
    return client


# login redirect and 401 ---------------------------------------------------------------------


def test_a_page_without_session_redirects_to_login_with_the_path_only(client: TestClient) -> None:
    response = client.get(f"/probe/7?reason={CANARY}&feed=lab", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/probe/7"


def test_other_methods_and_htmx_without_session_answer_401(client: TestClient) -> None:
    assert client.post("/probe", data={"csrf_token": "x"}).status_code == 401
    htmx = client.get("/probe", headers={"HX-Request": "true"}, follow_redirects=False)
    assert htmx.status_code == 401
    assert htmx.headers["HX-Redirect"] == "/login"


def test_login_returns_to_next_and_the_page_names_the_person(client: TestClient) -> None:
    response = login(client, next_path="/probe")
    assert response.status_code == 303 and response.headers["location"] == "/probe"
    page = client.get("/probe")
    assert f"hello {DANA} via local" in page.text
    assert DANA in page.text  # the header shows who is signed in


@pytest.mark.parametrize("bad", ["https://evil.example/", "//evil.example/x", "/\\evil", "x"])
def test_next_is_never_an_open_redirect(client: TestClient, bad: str) -> None:
    response = login(client, next_path=bad)
    assert response.headers["location"] == "/queue"


# CSRF -------------------------------------------------------------------------------------------


def test_post_without_or_with_a_wrong_csrf_token_is_403_and_does_nothing(dana: TestClient) -> None:
    app: Any = dana.app
    assert dana.post("/probe").status_code == 403
    assert dana.post("/probe", data={"csrf_token": "forged"}).status_code == 403
    refused = dana.post("/probe", headers={"X-CSRF-Token": "forged"})
    assert refused.status_code == 403
    assert "out of date" in refused.text
    assert app.state.posted == []


def test_post_with_the_session_token_in_form_or_header_is_done(dana: TestClient) -> None:
    token = meta_csrf(dana.get("/probe").text)
    assert dana.post("/probe", data={"csrf_token": token}).text == "done"
    assert dana.post("/probe", headers={"X-CSRF-Token": token}).text == "done"
    app: Any = dana.app
    assert app.state.posted == [DANA, DANA]


def test_the_login_form_itself_needs_the_token(client: TestClient) -> None:
    def post() -> int:
        data = {"username": DANA, "password": PASSWORD}
        return client.post("/login", data=data, follow_redirects=False).status_code

    assert post() == 401  # no session at all: nobody to check a token against
    client.get("/login")
    assert post() == 403
    assert client.get("/probe", follow_redirects=False).status_code == 303  # not logged in


# headers ---------------------------------------------------------------------------------------


def test_security_headers_on_every_kind_of_response(dana: TestClient) -> None:
    responses = {
        "page": dana.get("/probe"),
        "login": dana.get("/login", follow_redirects=False),
        "static": dana.get("/static/app.css"),
        "404": dana.get("/nothing-here"),
        "static 404": dana.get("/static/nothing.css"),
        "403": dana.post("/probe"),
        "500": dana.get("/boom"),
    }
    for what, response in responses.items():
        headers = response.headers
        assert headers["Content-Security-Policy"] == CSP, what
        assert "unsafe-inline" not in CSP
        assert headers["X-Frame-Options"] == "DENY", what
        assert headers["X-Content-Type-Options"] == "nosniff", what
        assert headers["Referrer-Policy"] == "no-referrer", what
        assert response.status_code < 500 or what == "500", what
        if what != "static":
            assert headers["Cache-Control"] == "no-store", what
    assert "Strict-Transport-Security" not in responses["page"].headers  # plain http


def test_no_api_docs_or_schema_are_served(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404


def test_static_files_and_vendored_htmx_with_its_licence(client: TestClient) -> None:
    assert "htmx" in client.get("/static/vendor/htmx/htmx.min.js").text
    assert "Zero-Clause BSD" in client.get("/static/vendor/htmx/LICENSE").text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "X-CSRF-Token" in script.text


def test_templates_have_no_inline_scripts_styles_or_handlers() -> None:
    inline = re.compile(
        r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=|\shx-on", re.IGNORECASE
    )
    templates = sorted(TEMPLATES.rglob("*.html"))
    assert templates, TEMPLATES
    offenders = [t.name for t in templates if inline.search(t.read_text(encoding="utf-8"))]
    assert offenders == []


# errors never echo input ------------------------------------------------------------------------


def test_404_and_400_pages_do_not_echo_the_request(dana: TestClient) -> None:
    missing = dana.get(f"/{CANARY}?q={CANARY}")
    assert missing.status_code == 404 and CANARY not in missing.text
    invalid = dana.get(f"/probe/{CANARY}")
    assert invalid.status_code == 400
    assert CANARY not in invalid.text and "row_id" in invalid.text


def test_a_500_shows_the_class_name_only_and_logs_no_message(
    dana: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="batchbridge.web"):
        response = dana.get("/boom")
    assert response.status_code == 500
    assert "ValueError" in response.text and CANARY not in response.text
    assert "ValueError" in caplog.text and CANARY not in caplog.text


def test_the_access_log_has_route_templates_not_ids_or_queries(
    dana: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="batchbridge.web.access"):
        dana.get(f"/probe/4711?reason={CANARY}")
    lines = [r.getMessage() for r in caplog.records if r.name == "batchbridge.web.access"]
    assert lines and lines[-1].startswith("GET /probe/{row_id} 200 ")
    assert "4711" not in caplog.text and CANARY not in caplog.text


def test_the_page_offers_csrf_meta_and_a_logout_form(dana: TestClient) -> None:
    html = dana.get("/probe").text
    token = meta_csrf(html)
    assert f'name="csrf_token" value="{token}"' in html
    assert 'action="/logout"' in html
    assert "/static/vendor/htmx/htmx.min.js" in html


def test_a_body_over_the_limit_answers_413(dana: TestClient) -> None:
    token = meta_csrf(dana.get("/probe").text)
    big = {"csrf_token": token, "filler": "x" * (1024 * 1024 + 1)}
    assert dana.post("/probe", data=big).status_code == 413

    def chunks():  # type: ignore[no-untyped-def]
        yield f"csrf_token={token}&filler=".encode()
        for _ in range(130):
            yield b"x" * 8192

    chunked = dana.post(
        "/probe",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert chunked.status_code == 413
    app: Any = dana.app
    assert app.state.posted == []


def test_every_template_and_static_file_ships_in_the_wheel() -> None:
    # setuptools package-data globs (pyproject.toml); a file they miss is absent after
    # `pip install`, and the page or style is then missing only there.
    import tomllib

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["batchbridge"]
    package = root / "src" / "batchbridge"
    shipped = {p for pattern in globs for p in package.glob(pattern) if p.is_file()}
    web = package / "web"
    wanted = {
        p
        for folder in ("templates", "static")
        for p in (web / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert wanted and wanted <= shipped, sorted(str(p) for p in wanted - shipped)


def test_every_state_changing_route_of_the_app_refuses_a_missing_token(dana: TestClient) -> None:
    # Covers the pages' routes too (web.pages.ROUTERS): each POST, PUT, PATCH or DELETE
    # must check the token before it opens the ledger or reads a field.
    changing = {"POST", "PUT", "PATCH", "DELETE"}
    checked = []
    # FastAPI keeps included routers as such (app.routes does not flatten them).
    routers = [auth_routes.router, *ROUTERS]
    routes = [*dana.app.routes, *(r for router in routers for r in router.routes)]  # type: ignore[attr-defined]
    for route in routes:
        methods = getattr(route, "methods", None) or set()
        for method in sorted(methods & changing):
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            response = dana.request(method, path, data={"why": CANARY})
            assert response.status_code == 403, (method, route.path, response.status_code)
            checked.append(route.path)
    assert "/logout" in checked and "/login" in checked and len(checked) > 3
