"""pytest fixtures: a real steward workbench server on a PostgreSQL ledger with quarantined rows.

Two tenants share the ledger: acme_lab (a steward, a viewer and an admin) and globex_clinic
(one steward), each with a lab feed whose file left canary patients in quarantine. The app
runs as `python -m batchbridge.cli steward serve` in a subprocess on a free 127.0.0.1 port,
its stdout and stderr in a log file the PHI scan reads; it is stopped at teardown.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from batchbridge.config.settings import Settings
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.demo.scenario import lab_file_name
from tests.plugins.browser import Tab
from tests.support.feed_scenarios import postgres_target
from tests.support.postgres import PostgresServer
from tests.support.steward import LocalLabFeed, build_local_lab_feed, ingest_frame

CANARIES = ["Zebulonquix", "Orvillecanary"]
FILE_DATE = date(2026, 11, 20)
STEWARD = "dana.steward@acme-health.example"
VIEWER = "val.viewer@acme-health.example"
ADMIN = "kim.admin@acme-health.example"
OTHER_STEWARD = "eve.steward@globex.example"
WAREHOUSE_ENV = "BB_TEST_WAREHOUSE_URL"
# Planted on acme_lab's file: one row a steward fixes by hand (the surname), two that wait
# for a mapping update, a bad NPI and a bad birth date: five rows, four reasons to count.
ACME_BAD_ROWS = {"missing_last_name": 1, "unmapped_code": 2, "bad_npi": 1, "bad_dob": 1}


@dataclass
class WorkbenchServer:
    """The app in a subprocess; `log_text()` is everything it wrote to stdout and stderr."""

    url: str
    log_file: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        """The server's output so far."""
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down cleanly), then SIGKILL when it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class Workbench:
    """The world the browser tests act on: feeds, ledger, warehouse, people and the server."""

    root: Path
    acme: LocalLabFeed
    globex: LocalLabFeed
    ledger_url: str
    acme_file_id: str
    globex_file_id: str
    passwords: dict[str, str]
    server: WorkbenchServer | None = field(default=None)

    @property
    def url(self) -> str:
        """Base URL of the running app (no trailing slash)."""
        assert self.server is not None, "the workbench server is not running"
        return self.server.url

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        assert self.server is not None, "the workbench server is not running"
        return self.server.log_text()

    def sql(self, query: str, *params: object) -> list[dict[str, Any]]:
        """Rows of a query on the ledger's (and warehouse's) PostgreSQL database."""
        with psycopg.connect(libpq(self.ledger_url), row_factory=dict_row) as conn:
            return conn.execute(query, params).fetchall()


def libpq(url: str) -> str:
    """The libpq URI of a SQLAlchemy `postgresql+psycopg://` URL."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def build_world(root: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    """Feeds, quarantined rows (canaries among them), stewards and local users under `root`."""
    monkeypatch.setenv(WAREHOUSE_ENV, ledger_url)
    acme = build_local_lab_feed(root)
    acme.update_yaml(targets=[postgres_target(WAREHOUSE_ENV)])
    globex = build_local_lab_feed(root, feed="globex_lab", tenant="globex_clinic")
    settings = Settings(
        database_url=ledger_url, staging_dir=root / "staging", config_dir=acme.config_dir
    )
    acme_rows = generate_lab_rows(
        30, seed=11, file_date=FILE_DATE, bad_rows=ACME_BAD_ROWS, canary_names=CANARIES
    )
    acme_file = ingest_frame(acme.loaded(), settings, acme_rows, name=lab_file_name(FILE_DATE))
    globex_rows = generate_lab_rows(
        12, seed=12, file_date=FILE_DATE, bad_rows={"bad_dob": 1}, canary_names=CANARIES[:1]
    )
    globex_file = ingest_frame(
        globex.loaded(), settings, globex_rows, name=lab_file_name(FILE_DATE)
    )
    (root / "stewards.yaml").write_text(
        "stewards:\n"
        f"  {STEWARD}:\n    acme_lab: steward\n"
        f"  {VIEWER}:\n    acme_lab: viewer\n"
        f"  {ADMIN}:\n    acme_lab: admin\n"
        f"  {OTHER_STEWARD}:\n    globex_clinic: steward\n",
        encoding="utf-8",
    )
    passwords = {who: secrets.token_urlsafe(12) for who in (STEWARD, VIEWER, ADMIN, OTHER_STEWARD)}
    write_users_file(root / "users.yaml", passwords)
    return Workbench(
        root=root,
        acme=acme,
        globex=globex,
        ledger_url=ledger_url,
        acme_file_id=acme_file,
        globex_file_id=globex_file,
        passwords=passwords,
    )


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_in(html: str) -> str:
    """The CSRF token of the first form in a page."""
    found = CSRF_FIELD.search(html)
    assert found, "no form with a CSRF token on this page"
    return found.group(1)


@contextlib.contextmanager
def signed_in(workbench: Workbench, who: str) -> Iterator[httpx.Client]:
    """An HTTP client holding `who`'s session (the login form, as a browser sends it).

    For requests a browser page would not make (missing tokens, other tenants' ids);
    redirects are not followed, so a test sees each answer.
    """
    with httpx.Client(base_url=workbench.url, timeout=30, follow_redirects=False) as client:
        token = csrf_in(client.get("/login").text)
        answer = client.post(
            "/login",
            data={"csrf_token": token, "username": who, "password": workbench.passwords[who]},
        )
        assert answer.status_code == 303, f"login of {who} answered {answer.status_code}"
        yield client


def write_users_file(path: Path, passwords: dict[str, str]) -> None:
    """The local login's users file: person -> argon2id hash of the password."""
    from batchbridge.web.auth.local import hash_password

    lines = ["users:"] + [f'  {who}: "{hash_password(pw)}"' for who, pw in passwords.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)


def server_environment(world: Workbench) -> dict[str, str]:
    """What `steward serve` reads: the ledger, the feeds, the stewards and the users file."""
    env = {
        **os.environ,
        "BATCHBRIDGE_DATABASE_URL": world.ledger_url,
        "BATCHBRIDGE_CONFIG_DIR": str(world.acme.config_dir),
        "BATCHBRIDGE_STAGING_DIR": str(world.root / "staging"),
        "BATCHBRIDGE_VAR_DIR": str(world.root / "var"),
        "BATCHBRIDGE_STEWARDS_FILE": str(world.root / "stewards.yaml"),
        "BATCHBRIDGE_WEB_USERS_FILE": str(world.root / "users.yaml"),
        WAREHOUSE_ENV: world.ledger_url,
        # Unbuffered: the log file is read while the server runs (the PHI scan).
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("BATCHBRIDGE_ACTOR", "BATCHBRIDGE_WEB_AUTH", "BATCHBRIDGE_WORKBENCH_URL"):
        env.pop(name, None)  # the browser's login is the only identity
    return env


def start_server(world: Workbench, *, timeout: float = 60.0) -> WorkbenchServer:
    """Start the app on a free 127.0.0.1 port; returns once /healthz answers."""
    port = free_port()
    log_file = world.root / "workbench-server.log"
    command = [sys.executable, "-m", "batchbridge.cli", "steward", "serve"]
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=world.root,
            env=server_environment(world),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = WorkbenchServer(url=f"http://127.0.0.1:{port}", log_file=log_file, process=process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"workbench exited {process.returncode}:\n{server.log_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"workbench did not answer within {timeout} s:\n{server.log_text()}")


def surname_row(workbench: Workbench) -> dict[str, Any]:
    """The acme_lab row quarantined for its missing surname: the one a steward fixes by hand."""
    rows = workbench.sql(
        "SELECT id, row_number, run_id, reasons FROM quarantined_rows "
        "WHERE tenant = 'acme_lab' ORDER BY id"
    )
    return next(r for r in rows if "patient_last_name:required" in str(r["reasons"]))


# The steps of the steward loop as a person takes them in the browser: labels and button
# names, as the pages show them.


def sign_in(tab: Tab, workbench: Workbench, who: str) -> None:
    """The local login form, filled in and sent."""
    page = tab.page
    page.goto(f"{workbench.url}/login")
    page.get_by_label("User name").fill(who)
    page.get_by_label("Password").fill(workbench.passwords[who])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def reveal(tab: Tab, why: str) -> None:
    """Reveal the row page's values, giving a reason."""
    tab.page.get_by_label("Reason or ticket for revealing").fill(why)
    tab.page.get_by_role("button", name="Reveal values").click()
    tab.page.wait_for_load_state()


def type_fix(tab: Tab, column: str, value: str) -> None:
    """Type a new value and ask "would it pass now?" (the answer lands in #preview)."""
    tab.page.locator(f"#set-{column}").fill(value)
    tab.page.get_by_role("button", name="Would it pass now?").click()


def save_fix(tab: Tab, why: str) -> None:
    """Save the typed values with a reason."""
    tab.page.locator("#fix-form input[name=why]").fill(why)
    tab.page.get_by_role("button", name="Save fix").click()
    tab.page.wait_for_load_state()


def release_row(tab: Tab, why: str) -> str:
    """Release the row shown; returns the result page's summary line."""
    page = tab.page
    page.locator("form[action$='/release'] input[name=why]").fill(why)
    page.get_by_role("button", name="Release this row").click()
    page.wait_for_load_state()
    return page.locator("main .flash").first.inner_text()


@contextlib.contextmanager
def running_workbench(
    root: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workbench]:
    """Build the world under `root` on `ledger_url` and serve it until the block ends."""
    world = build_world(root, ledger_url, monkeypatch)
    world.server = start_server(world)
    try:
        yield world
    finally:
        world.server.stop()


@pytest.fixture
def workbench(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workbench]:
    """A running workbench on a fresh PostgreSQL ledger holding both tenants' quarantine."""
    with running_workbench(tmp_path / "workbench", postgres_url, monkeypatch) as world:
        yield world


@pytest.fixture(scope="module")
def shared_workbench(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Workbench]:
    """One workbench for a module's tests that change no row (they check they don't).

    Saves a ledger, a world and a server start (about 3 s) per test; a test that changes
    state or the server's memory (the login limiter) takes `workbench` instead.
    """
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    try:
        with (
            pytest.MonkeyPatch.context() as monkeypatch,
            running_workbench(tmp_path_factory.mktemp("workbench"), url, monkeypatch) as world,
        ):
            yield world
    finally:
        postgres_server.drop_database(name)
