"""`batchbridge steward serve`: settings from the environment, refusals, a real uvicorn run.

Also the steward service dependency: the audit actor is the person logged in.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.responses import PlainTextResponse

from batchbridge.cli.app import main
from batchbridge.errors import ConfigError, SecretNotFoundError
from batchbridge.ledger.models import AuditEvent
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.service import StewardService
from batchbridge.web.app import create_app
from batchbridge.web.deps import Service
from batchbridge.web.settings import settings_from_env
from tests.support.steward import LocalLabFeed
from tests.unit.test_web_app import CANARY, DANA, LOOPBACK, login, make_settings, write_users

SECRETS = {"env:WB_SECRET": "x" * 40, "env:OIDC_SECRET": "client-secret"}


def _resolve(ref: str) -> str:
    if ref not in SECRETS:
        raise SecretNotFoundError(f"secret {ref} is not set in the environment")
    return SECRETS[ref]


def _from_env(tmp_path: Path, host: str = "127.0.0.1", **env: str):  # type: ignore[no-untyped-def]
    return settings_from_env(
        config_dir=tmp_path / "feeds",
        database_url="sqlite:///x.db",
        host=host,
        resolve_secret=_resolve,
        environ=env,
    )


def test_local_is_the_default_with_its_users_file_beside_the_feeds(tmp_path: Path) -> None:
    settings = _from_env(tmp_path)
    assert settings.auth == "local" and settings.on_loopback
    assert settings.local_users_file == (tmp_path / "web-users.yaml").resolve()
    assert settings.session_secret == ""  # generated per start
    assert (settings.idle_timeout_seconds, settings.absolute_timeout_seconds) == (900, 28800)


def test_header_mode_reads_proxies_header_and_secret(tmp_path: Path) -> None:
    settings = _from_env(
        tmp_path,
        host="0.0.0.0",
        BATCHBRIDGE_WEB_AUTH="header",
        BATCHBRIDGE_WEB_TRUSTED_PROXIES="10.0.0.5, 10.1.0.0/16",
        BATCHBRIDGE_WEB_IDENTITY_HEADER="X-Auth-Request-Email",
        BATCHBRIDGE_WEB_SESSION_SECRET="env:WB_SECRET",
        BATCHBRIDGE_WEB_IDLE_MINUTES="30",
    )
    assert settings.trusted_proxies == ("10.0.0.5/32", "10.1.0.0/16")
    assert settings.identity_header == "X-Auth-Request-Email"
    assert settings.session_secret == "x" * 40 and settings.idle_timeout_seconds == 1800
    assert "x" * 40 not in repr(settings)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"BATCHBRIDGE_WEB_AUTH": "kerberos"}, "unknown login mode"),
        ({"BATCHBRIDGE_WEB_AUTH": "header"}, "BATCHBRIDGE_WEB_SESSION_SECRET"),
        (
            {"BATCHBRIDGE_WEB_AUTH": "header", "BATCHBRIDGE_WEB_SESSION_SECRET": "env:WB_SECRET"},
            "BATCHBRIDGE_WEB_TRUSTED_PROXIES",
        ),
        ({"BATCHBRIDGE_WEB_TRUSTED_PROXIES": "proxy.example"}, "not an IP address"),
        ({"BATCHBRIDGE_WEB_AUTH": "oidc"}, "BATCHBRIDGE_OIDC_METADATA_URL"),
        (
            {
                "BATCHBRIDGE_WEB_AUTH": "oidc",
                "BATCHBRIDGE_WEB_SESSION_SECRET": "env:WB_SECRET",
                "BATCHBRIDGE_OIDC_METADATA_URL": "https://idp/.well-known/openid-configuration",
                "BATCHBRIDGE_OIDC_CLIENT_ID": "wb",
                "BATCHBRIDGE_OIDC_CLIENT_SECRET": "env:OIDC_SECRET",
            },
            "BATCHBRIDGE_WEB_PUBLIC_URL",
        ),
        ({"BATCHBRIDGE_WEB_IDLE_MINUTES": "0"}, "positive whole number"),
        ({"BATCHBRIDGE_WEB_SESSION_SECRET": "env:MISSING"}, "env:MISSING"),
    ],
)
def test_wrong_settings_are_refused_naming_what_to_set(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        _from_env(tmp_path, **env)


def test_serve_refuses_the_local_login_off_loopback_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wildcard = "0.0.0.0"
    code = main(["steward", "serve", "--host", wildcard, "--config-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "local login is for the demo and tests only" in err


def test_the_service_acts_as_the_logged_in_person(lab: LocalLabFeed, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, config_dir=lab.config_dir, database_url=lab.settings.database_url
    )
    app = create_app(settings)

    def rows(service: Service) -> PlainTextResponse:
        assert isinstance(service, StewardService)
        return PlainTextResponse(str(service.list_page().total))

    app.add_api_route("/rows-probe", rows, methods=["GET"])
    client = TestClient(app, client=LOOPBACK)
    login(client, next_path="/rows-probe")
    assert client.get("/rows-probe").text == "3"
    store = LedgerStore.open_existing(lab.settings.database_url)
    try:
        with store.session() as s:
            last = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
            assert last is not None and (last.actor, last.action) == (DANA, "list")
    finally:
        store.engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_runs_uvicorn_on_loopback_with_an_access_log_without_queries(
    lab: LocalLabFeed, tmp_path: Path
) -> None:
    users = write_users(tmp_path / "users.yaml")
    port = _free_port()
    log = tmp_path / "serve.log"
    command = [
        str(Path(sys.executable).with_name("batchbridge")),
        *("steward", "serve", "--port", str(port), "--config-dir", str(lab.config_dir)),
        *("--users-file", str(users)),
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        page = httpx.get(f"{base}/login?next=/queue&reason={CANARY}", timeout=5)
        assert page.status_code == 200 and "server" not in page.headers
        assert httpx.get(f"{base}/rows/12?q={CANARY}", timeout=5).status_code in (303, 404)
    finally:
        process.terminate()
        process.wait(timeout=15)
    text = log.read_text()
    assert f"steward workbench: http://127.0.0.1:{port}/ (login: local" in text
    assert "batchbridge.web.access: GET /login 200" in text
    assert CANARY not in text and "?" not in text.split("steward workbench")[1]
