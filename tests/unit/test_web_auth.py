"""Workbench logins: local (demo), trusted header, session cookie flags and timeouts, limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from batchbridge.errors import ConfigError
from batchbridge.web.app import create_app
from batchbridge.web.auth.local import check_password, hash_password, load_users
from batchbridge.web.identity import person_name
from batchbridge.web.sessions import COOKIE_NAME
from tests.unit.test_web_app import (
    DANA,
    LOOPBACK,
    PASSWORD,
    Clock,
    add_probes,
    local_app,
    login,
    make_settings,
    meta_csrf,
    write_users,
)

SECRET = "s" * 40
PROXY = ("10.0.0.5", 40000)


def _set_cookie(response_headers: list[tuple[str, str]]) -> str:
    found = [v for k, v in response_headers if k.lower() == "set-cookie" and COOKIE_NAME in v]
    assert found, response_headers
    return found[-1]


# local login ---------------------------------------------------------------------------------


def test_login_sets_a_strict_httponly_cookie_without_secure_over_http(tmp_path: Path) -> None:
    client = TestClient(local_app(tmp_path), client=LOOPBACK)
    response = login(client)
    cookie = _set_cookie(response.headers.multi_items())
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie and "Max-Age" not in cookie  # ends with the browser


def test_the_cookie_is_secure_when_the_public_url_is_https(tmp_path: Path) -> None:
    app = local_app(tmp_path, public_url="https://workbench.example")
    client = TestClient(app, client=LOOPBACK, base_url="https://testserver")
    cookie = _set_cookie(login(client).headers.multi_items())
    assert "Secure" in cookie
    assert "Strict-Transport-Security" in client.get("/probe").headers


def test_a_wrong_password_or_unknown_user_fails_without_echoing(tmp_path: Path) -> None:
    client = TestClient(local_app(tmp_path), client=LOOPBACK)
    for name, password in ((DANA, "wrong"), ("nobody@example.org", PASSWORD), ("", "")):
        response = login(client, name=name, password=password)
        assert response.status_code == 401
        assert "Wrong user name or password" in response.text
        assert "nobody@example.org" not in response.text
    assert client.get("/probe", follow_redirects=False).status_code == 303


def test_the_user_name_is_matched_without_case_and_named_as_written(tmp_path: Path) -> None:
    client = TestClient(local_app(tmp_path), client=LOOPBACK)
    assert login(client, name=DANA.upper()).status_code == 303
    assert f"hello {DANA} via local" in client.get("/probe").text


def test_login_gives_a_new_session_id_and_csrf_token(tmp_path: Path) -> None:
    client = TestClient(local_app(tmp_path), client=LOOPBACK)
    before = meta_csrf(client.get("/login").text)
    login(client)
    assert meta_csrf(client.get("/probe").text) != before


def test_five_failures_in_five_minutes_answer_429_per_address_and_per_user(
    tmp_path: Path,
) -> None:
    clock = Clock()
    app = local_app(tmp_path, clock)
    client = TestClient(app, client=LOOPBACK)
    for _ in range(5):
        assert login(client, password="wrong").status_code == 401
    blocked = login(client)  # even the right password, while blocked
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 300
    # The same user from another loopback address: the user name is blocked too.
    other = TestClient(app, client=("127.0.0.2", 50001))
    assert login(other).status_code == 429
    clock.advance(301)
    assert login(client).status_code == 303


def test_failures_for_many_names_from_one_address_are_limited_too(tmp_path: Path) -> None:
    client = TestClient(local_app(tmp_path), client=LOOPBACK)
    for n in range(5):
        assert login(client, name=f"guess{n}@example.org").status_code == 401
    assert login(client).status_code == 429


def test_the_local_login_is_refused_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local login is for the demo and tests only"):
        create_app(make_settings(tmp_path, on_loopback=False))
    remote = TestClient(local_app(tmp_path), client=("192.0.2.10", 50000))
    response = login(remote)
    assert response.status_code == 403
    assert remote.get("/probe", follow_redirects=False).status_code == 303


def test_the_users_file_refuses_shared_accounts_and_plain_passwords(tmp_path: Path) -> None:
    shared = write_users(tmp_path / "shared.yaml", {"root": "pw"})
    with pytest.raises(ConfigError, match="shared account"):
        load_users(shared)
    plain = tmp_path / "plain.yaml"
    plain.write_text("users:\n  dana@example.org: hunter2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not an argon2id hash") as caught:
        load_users(plain)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="does not exist"):
        create_app(make_settings(tmp_path, local_users_file=tmp_path / "missing.yaml"))


def test_hash_password_makes_argon2id_hashes_the_file_accepts(tmp_path: Path) -> None:
    hashed = hash_password("pw")
    assert hashed.startswith("$argon2id$")
    path = tmp_path / "users.yaml"
    path.write_text(f"users:\n  dana@example.org: '{hashed}'\n", encoding="utf-8")
    users = load_users(path)
    assert check_password(users, "dana@example.org", "pw") == "dana@example.org"
    assert check_password(users, "dana@example.org", "nope") is None


@pytest.mark.parametrize("name", ["root", "Postgres", "", "  ", "a\x00b", "x" * 300])
def test_shared_or_malformed_identities_are_no_person(name: str) -> None:
    assert person_name(name) is None


# sessions ------------------------------------------------------------------------------------


def test_the_idle_timeout_ends_a_session_and_each_request_extends_it(tmp_path: Path) -> None:
    clock = Clock()
    client = TestClient(local_app(tmp_path, clock), client=LOOPBACK)
    login(client)
    for _ in range(3):  # 3 x 14 minutes: active, so still signed in after 42 minutes
        clock.advance(14 * 60)
        assert client.get("/probe", follow_redirects=False).status_code == 200
    clock.advance(15 * 60 + 1)
    expired = client.get("/probe", follow_redirects=False)
    assert expired.status_code == 303 and expired.headers["location"] == "/login?next=/probe"
    assert "Max-Age=0" in _set_cookie(expired.headers.multi_items())  # browser forgets it


def test_the_absolute_timeout_ends_even_an_active_session(tmp_path: Path) -> None:
    clock = Clock()
    client = TestClient(local_app(tmp_path, clock), client=LOOPBACK)
    login(client)
    for _ in range(8 * 6 - 1):  # every 10 minutes for 7 h 50 min
        clock.advance(10 * 60)
        assert client.get("/probe", follow_redirects=False).status_code == 200
    clock.advance(10 * 60 + 1)
    assert client.get("/probe", follow_redirects=False).status_code == 303


def test_an_old_cookie_replayed_after_its_idle_time_is_refused(tmp_path: Path) -> None:
    clock = Clock()
    client = TestClient(local_app(tmp_path, clock), client=LOOPBACK)
    old = _set_cookie(login(client).headers.multi_items()).split(";")[0].split("=", 1)[1]
    clock.advance(16 * 60)
    fresh = TestClient(client.app, client=LOOPBACK, cookies={COOKIE_NAME: old})
    assert fresh.get("/probe", follow_redirects=False).status_code == 303


def test_logout_revokes_the_session_even_for_a_kept_copy(tmp_path: Path) -> None:
    client = TestClient(local_app(tmp_path), client=LOOPBACK)
    login(client)
    kept = client.cookies[COOKIE_NAME]
    token = meta_csrf(client.get("/probe").text)
    response = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert client.get("/probe", follow_redirects=False).status_code == 303
    replay = TestClient(client.app, client=LOOPBACK, cookies={COOKIE_NAME: kept})
    assert replay.get("/probe", follow_redirects=False).status_code == 303


def test_a_cookie_signed_with_another_secret_is_refused(tmp_path: Path) -> None:
    one = TestClient(local_app(tmp_path, session_secret="a" * 40), client=LOOPBACK)
    login(one)
    other_app = local_app(tmp_path, session_secret="b" * 40)
    other = TestClient(other_app, client=LOOPBACK, cookies={COOKIE_NAME: one.cookies[COOKIE_NAME]})
    assert other.get("/probe", follow_redirects=False).status_code == 303


def test_a_generated_secret_is_only_for_the_local_login(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SESSION_SECRET"):
        create_app(make_settings(tmp_path, auth="header", trusted_proxies=("10.0.0.5",)))
    with pytest.raises(ConfigError, match="shorter than 32"):
        create_app(make_settings(tmp_path, session_secret="short"))


# trusted header ------------------------------------------------------------------------------


def _header_client(tmp_path: Path, peer: tuple[str, int]) -> TestClient:
    settings = make_settings(
        tmp_path,
        auth="header",
        session_secret=SECRET,
        trusted_proxies=("10.0.0.0/24",),
        on_loopback=False,
        identity_header="X-Auth-User",
    )
    return TestClient(add_probes(create_app(settings)), client=peer)


def test_the_header_is_believed_from_a_trusted_proxy(tmp_path: Path) -> None:
    client = _header_client(tmp_path, PROXY)
    page = client.get("/probe", headers={"X-Auth-User": DANA})
    assert page.status_code == 200 and f"hello {DANA} via header" in page.text
    token = meta_csrf(page.text)
    done = client.post("/probe", headers={"X-Auth-User": DANA, "X-CSRF-Token": token})
    assert done.text == "done"


def test_the_header_from_any_other_address_is_401(tmp_path: Path) -> None:
    client = _header_client(tmp_path, ("192.0.2.10", 40000))
    response = client.get("/probe", headers={"X-Auth-User": DANA}, follow_redirects=False)
    assert response.status_code == 401
    assert DANA not in response.text


def test_a_trusted_proxy_without_the_header_or_with_a_shared_login_is_401(tmp_path: Path) -> None:
    client = _header_client(tmp_path, PROXY)
    assert client.get("/probe", follow_redirects=False).status_code == 401
    shared = client.get("/probe", headers={"X-Auth-User": "root"}, follow_redirects=False)
    assert shared.status_code == 401


def test_another_person_behind_the_proxy_gets_a_new_session(tmp_path: Path) -> None:
    client = _header_client(tmp_path, PROXY)
    dana_token = meta_csrf(client.get("/probe", headers={"X-Auth-User": DANA}).text)
    kim = {"X-Auth-User": "kim.admin@acme-health.example"}
    assert client.post("/probe", headers={**kim, "X-CSRF-Token": dana_token}).status_code == 403
    kim_page = client.get("/probe", headers=kim)
    assert "hello kim.admin@acme-health.example" in kim_page.text
    assert meta_csrf(kim_page.text) != dana_token


def test_the_local_login_form_is_absent_in_header_mode(tmp_path: Path) -> None:
    client = _header_client(tmp_path, PROXY)
    client.get("/login")
    response = client.post("/login", data={"username": DANA, "password": PASSWORD})
    assert response.status_code == 404


def test_the_reports_queue_link_keeps_its_run_filter_through_login() -> None:
    from batchbridge.web.identity import safe_next

    run = "9f26aff0-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    assert safe_next(f"/queue?run={run}") == f"/queue?run={run}"
    assert safe_next(f"/queue?run={run}&status=fixed") == f"/queue?run={run}&status=fixed"
    # A free-text filter (the reason box may hold a name) is never carried along.
    assert safe_next("/queue?reason=Zebulonquix") == "/queue"
    assert safe_next(f"/queue?run={run}&reason=x") == "/queue"
    assert safe_next("/rows/3?run=abc") == "/rows/3"
