"""Shared by the workbench page tests: the app on the steward lab's SQLite ledger, people logged in.

Two tenants share the ledger: acme_lab (the `lab` fixture's 3 quarantined rows, canary
names among them) and globex (one quarantined row). People log in through the real
local login, so sessions, CSRF tokens and the navigation are the app's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from html import unescape

import httpx2
import pytest
from fastapi.testclient import TestClient

from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.web.app import create_app
from batchbridge.web.settings import WorkbenchSettings
from tests.support.steward import LocalLabFeed, build_local_lab_feed
from tests.unit.steward_cli_helpers import CANARIES, DANA, EVE, FILE_DATE, KIM

OMAR = "omar.viewer@acme-health.example"
PASSWORD = "correct horse battery staple"
PEOPLE = (DANA, KIM, EVE, OMAR)
META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
LINKS = re.compile(r'(?:href|action|hx-post|hx-get)="([^"]*)"')


@cache
def _password_hash() -> str:
    from batchbridge.web.auth.local import hash_password

    return hash_password(PASSWORD)  # argon2 is slow on purpose: once per test session


@dataclass
class Browser:
    """A TestClient logged in as one person, keeping the CSRF token of its session."""

    client: TestClient
    who: str
    csrf: str = ""
    seen: list[httpx2.Response] = field(default_factory=list)

    def get(self, url: str, **kwargs: object) -> httpx2.Response:
        response = self.client.get(url, **kwargs)  # type: ignore[arg-type]
        self._note(response)
        return response

    def post(
        self, url: str, data: dict[str, str] | None = None, *, csrf: bool = True, **kwargs: object
    ) -> httpx2.Response:
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.csrf
        response = self.client.post(url, data=form, **kwargs)  # type: ignore[arg-type]
        self._note(response)
        return response

    def htmx(self, url: str, data: dict[str, str]) -> httpx2.Response:
        """An htmx POST: the token in the header, as static/app.js sends it."""
        response = self.client.post(
            url, data=data, headers={"HX-Request": "true", "X-CSRF-Token": self.csrf}
        )
        self._note(response)
        return response

    def _note(self, response: httpx2.Response) -> None:
        self.seen.append(response)
        if found := META_CSRF.search(response.text):
            self.csrf = found.group(1)


@dataclass
class Workbench:
    """The app and its world: the acme lab (rows, ledger), the globex feed's file and row."""

    lab: LocalLabFeed
    globex: LocalLabFeed
    globex_file_id: str
    settings: WorkbenchSettings

    def login(self, who: str) -> Browser:
        # From loopback: the local login refuses anyone else.
        client = TestClient(create_app(self.settings), client=("127.0.0.1", 50000))
        browser = Browser(client=client, who=who)
        browser.get("/login")
        answer = browser.post("/login", {"username": who, "password": PASSWORD})
        assert answer.status_code == 200 and "/login" not in str(answer.url), who
        return browser


def build_workbench(lab: LocalLabFeed, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    root = lab.root
    globex = build_local_lab_feed(root, feed="globex_lab", tenant="globex")
    rows = generate_lab_rows(
        12, seed=12, file_date=FILE_DATE, bad_rows={"bad_dob": 1}, canary_names=CANARIES[:1]
    )
    globex_file = globex.ingest(rows, file_date=FILE_DATE)
    stewards = root / "stewards.yaml"
    stewards.write_text(
        f"stewards:\n  {DANA}:\n    acme_lab: steward\n  {KIM}:\n    acme_lab: admin\n"
        f"  {OMAR}:\n    acme_lab: viewer\n  {EVE}:\n    globex: steward\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(stewards))
    users = root / "web-users.yaml"
    users.write_text(
        "users:\n" + "".join(f'  {who}: "{_password_hash()}"\n' for who in PEOPLE),
        encoding="utf-8",
    )
    settings = WorkbenchSettings(
        config_dir=lab.config_dir,
        database_url=lab.settings.database_url,
        auth="local",
        local_users_file=users,
    )
    return Workbench(lab=lab, globex=globex, globex_file_id=globex_file, settings=settings)


def links(html: str) -> list[str]:
    """Every URL a page's links, forms and htmx attributes point to."""
    return [unescape(found) for found in LINKS.findall(html)]


def row_ids(html: str) -> list[int]:
    """Ids of the rows a queue page links to, in page order."""
    return [int(i) for i in re.findall(r'href="/rows/([0-9]+)"', html)]


def title(html: str) -> str:
    found = re.search(r"<title>(.*?)</title>", html, re.S)
    assert found is not None
    return unescape(found.group(1))


def assert_no_canary(response: httpx2.Response) -> None:
    """Neither the body nor any header (title, Location) names a canary patient."""
    text = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    for canary in CANARIES:
        assert canary.lower() not in text.lower(), f"{canary} in {response.url}"


def revealed_value(html: str, column: str) -> str:
    """A value of a revealed row page's values table."""
    cell = html.split(f"<code>{column}</code></th>")[1].split("</td>")[0]
    return unescape(cell.split(">")[-1].strip())


def add_unmapped_code(lab: LocalLabFeed) -> None:
    """A steward adds the planted unmapped code to the mapping table (a mapping update)."""
    lab.add_mapping("ZZ-NOT-IN-MAP", "2345-7", "Glucose", False)
