"""The workbench refuses what it must, against the real server on PostgreSQL: nothing changes.

Requests a page would never send (no session, no or a wrong CSRF token, another tenant's
id, a viewer posting a reveal) are made with an HTTP client holding a real session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from batchbridge.cli.demo import DEMO_STEWARD, demo_login
from batchbridge.tasks.report import workbench_queue_url
from batchbridge.web.auth.local import check_password, load_users
from tests.plugins.workbench import (
    CANARIES,
    OTHER_STEWARD,
    STEWARD,
    VIEWER,
    Workbench,
    csrf_in,
    signed_in,
    surname_row,
)

pytestmark = pytest.mark.integration

MISSING_ROW = 987654
STATE_CHANGES = ("reveal", "fix", "release", "discard")


def ledger_state(workbench: Workbench) -> dict[str, Any]:
    """What a refused request must leave as it was: rows, edits, warehouse, audit events."""
    return {
        "rows": workbench.sql(
            "SELECT id, status, key_id, ciphertext, released_load_id, settled_by "
            "FROM quarantined_rows ORDER BY id"
        ),
        "edits": workbench.sql("SELECT count(*) AS n FROM quarantine_edits"),
        "warehouse": workbench.sql("SELECT count(*) AS n FROM lab_result"),
        "events": workbench.sql("SELECT id, actor, action FROM audit_events ORDER BY id"),
    }


def globex_row(workbench: Workbench) -> int:
    """A row of the other tenant."""
    (row,) = workbench.sql("SELECT id FROM quarantined_rows WHERE tenant = 'globex_clinic'")
    return int(row["id"])


def posts(row_id: int, token: str | None) -> list[tuple[str, dict[str, str]]]:
    """Every state-changing form of a row page, filled in as a steward would."""
    extra = {} if token is None else {"csrf_token": token}
    why = {"why": "ticket 5150", **extra}
    return [
        (f"/rows/{row_id}/reveal", why),
        (f"/rows/{row_id}/fix", {**why, "set:patient_last_name": "Newsurname"}),
        (f"/rows/{row_id}/release", why),
        (f"/rows/{row_id}/discard", why),
    ]


def bulk_posts(file_id: str, token: str | None) -> list[tuple[str, dict[str, str]]]:
    """The bulk pages' confirmed forms for one file, and the audit chain check."""
    form = {"file": file_id, "why": "ticket 5150"}
    if token is not None:
        form["csrf_token"] = token
    verify = {} if token is None else {"csrf_token": token}
    return [("/bulk/release", form), ("/bulk/discard", form), ("/audit/verify", verify)]


def test_no_session_goes_to_login_and_changes_nothing(shared_workbench: Workbench) -> None:
    workbench = shared_workbench
    row = int(surname_row(workbench)["id"])
    pages = ["/", "/queue", f"/rows/{row}", f"/files/{workbench.acme_file_id}", "/runs", "/audit"]
    before = ledger_state(workbench)
    with httpx.Client(base_url=workbench.url, follow_redirects=False) as anonymous:
        for path in pages:
            answer = anonymous.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/login"), path
        # No cookie at all: not signed in, whatever the form carries.
        for path, form in posts(row, token="forged"):
            anonymous.cookies.clear()  # an error page starts an anonymous session
            assert anonymous.post(path, data=form).status_code == 401, path
        # The login form's own session and its valid token sign nobody in either.
        followed = anonymous.get(f"/rows/{row}", follow_redirects=True)
        assert followed.url.path == "/login" and "Sign in" in followed.text
        for path, form in posts(row, token=csrf_in(followed.text)):
            assert anonymous.post(path, data=form).status_code == 401, path
    assert ledger_state(workbench) == before


def test_viewer_cannot_reveal_fix_release_or_discard(shared_workbench: Workbench) -> None:
    workbench = shared_workbench
    row = int(surname_row(workbench)["id"])
    with signed_in(workbench, VIEWER) as viewer:
        page = viewer.get(f"/rows/{row}")
        assert page.status_code == 200
        for action in STATE_CHANGES:  # no button offered...
            assert f'action="/rows/{row}/{action}"' not in page.text
        token = csrf_in(page.text)  # the page's one form: sign out
        before = ledger_state(workbench)
        refused = [*posts(row, token), *bulk_posts(workbench.acme_file_id, token)[:2]]
        for path, form in refused:  # ...and none obeyed
            answer = viewer.post(path, data=form)
            assert answer.status_code == 403, path
            assert not any(c in answer.text for c in CANARIES)
        assert viewer.get("/audit").status_code == 403  # admins only
    after = ledger_state(workbench)
    assert {k: v for k, v in after.items() if k != "events"} == {
        k: v for k, v in before.items() if k != "events"
    }
    # Each refusal is audited (access_denied by the viewer), nothing else happened.
    new_events = after["events"][len(before["events"]) :]
    assert len(new_events) == len(refused) + 1
    assert {(e["actor"], e["action"]) for e in new_events} == {(VIEWER, "access_denied")}


@pytest.mark.parametrize("token", ["missing", "made-up", "another session's"])
def test_missing_or_wrong_csrf_is_403_and_changes_nothing(
    shared_workbench: Workbench, token: str
) -> None:
    workbench = shared_workbench
    row = int(surname_row(workbench)["id"])
    with signed_in(workbench, STEWARD) as steward, signed_in(workbench, STEWARD) as other:
        steward.get(f"/rows/{row}")
        sent = {
            "missing": None,
            "made-up": "x" * 43,
            "another session's": csrf_in(other.get(f"/rows/{row}").text),
        }[token]
        before = ledger_state(workbench)
        for path, form in [*posts(row, sent), *bulk_posts(workbench.acme_file_id, sent)]:
            assert steward.post(path, data=form).status_code == 403, path
        # htmx sends the token in a header: checked the same way.
        answer = steward.post(
            f"/rows/{row}/preview",
            data={"set:patient_last_name": "Newsurname"},
            headers={"HX-Request": "true", **({"X-CSRF-Token": sent} if sent else {})},
        )
        assert answer.status_code == 403
    assert ledger_state(workbench) == before


def test_other_tenants_row_answers_exactly_like_a_missing_one(shared_workbench: Workbench) -> None:
    workbench = shared_workbench
    theirs = globex_row(workbench)
    with signed_in(workbench, STEWARD) as steward:
        missing = steward.get(f"/rows/{MISSING_ROW}")
        other = steward.get(f"/rows/{theirs}")
        assert missing.status_code == other.status_code == 404
        assert other.text == missing.text
        token = csrf_in(steward.get("/queue").text)
        before = ledger_state(workbench)
        for (path_theirs, form), (path_missing, _) in zip(
            posts(theirs, token), posts(MISSING_ROW, token), strict=True
        ):
            refused, absent = (
                steward.post(path_theirs, data=form),
                steward.post(path_missing, data=form),
            )
            assert refused.status_code == absent.status_code == 404, path_theirs
            assert refused.text == absent.text, path_missing
        # Their file: its balance page and a bulk release of it, as for no such file.
        nobody = "00000000-0000-4000-8000-000000000000"
        theirs_file, absent_file = (
            steward.get(f"/files/{workbench.globex_file_id}"),
            steward.get(f"/files/{nobody}"),
        )
        assert theirs_file.status_code == absent_file.status_code == 404
        assert theirs_file.text == absent_file.text
        (bulk_theirs, form), (bulk_absent, _) = (
            bulk_posts(workbench.globex_file_id, token)[0],
            bulk_posts(nobody, token)[0],
        )
        refused = steward.post(bulk_theirs, data=form)
        absent = steward.post(bulk_absent, data={**form, "file": nobody})
        assert refused.status_code == absent.status_code == 404
        assert refused.text == absent.text
    after = ledger_state(workbench)
    assert after["rows"] == before["rows"] and after["warehouse"] == before["warehouse"]
    # Their steward still finds the row untouched.
    with signed_in(workbench, OTHER_STEWARD) as eve:
        assert eve.get(f"/rows/{theirs}").status_code == 200


def test_every_page_is_no_store_and_a_reveal_above_all(shared_workbench: Workbench) -> None:
    workbench = shared_workbench
    row = int(surname_row(workbench)["id"])
    with signed_in(workbench, STEWARD) as steward:
        masked = steward.get(f"/rows/{row}")
        revealed = steward.post(
            f"/rows/{row}/reveal", data={"csrf_token": csrf_in(masked.text), "why": "ticket 77"}
        )
        assert revealed.status_code == 200
        for answer in (masked, revealed, steward.get("/queue"), steward.get("/login")):
            assert "no-store" in answer.headers["cache-control"]
            csp = answer.headers["content-security-policy"]
            assert "unsafe-inline" not in csp and "script-src 'self'" in csp
        assert revealed.text != masked.text


def test_login_is_rate_limited(workbench: Workbench) -> None:
    with httpx.Client(base_url=workbench.url, follow_redirects=False) as client:
        token = csrf_in(client.get("/login").text)
        wrong = {"csrf_token": token, "username": STEWARD, "password": "not-the-password"}
        answers = [client.post("/login", data=wrong).status_code for _ in range(5)]
        assert answers == [401] * 5
        right = {**wrong, "password": workbench.passwords[STEWARD]}
        blocked = client.post("/login", data=right)
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0
        # The same address is limited for every name while its failures count.
        other = {**right, "username": VIEWER, "password": workbench.passwords[VIEWER]}
        assert client.post("/login", data=other).status_code == 429
    assert not any(c in workbench.log_text() for c in (*CANARIES, "not-the-password"))


def test_the_demo_login_keeps_only_a_hash(tmp_path: Path) -> None:
    users_file = tmp_path / "web-users.yaml"
    users_file.write_text('users:\n  kim@example.org: "$argon2id$v=19$m=65536,t=3,p=4$x$y"\n')
    first = demo_login(users_file)
    second = demo_login(users_file)  # a new one each demo run: the hash cannot be printed
    assert first != second
    text = users_file.read_text(encoding="utf-8")
    assert first not in text and second not in text
    assert users_file.stat().st_mode & 0o777 == 0o600
    users = load_users(users_file)
    assert set(users.users) == {"kim@example.org", DEMO_STEWARD}  # others are kept
    assert check_password(users, DEMO_STEWARD, second) == DEMO_STEWARD
    assert check_password(users, DEMO_STEWARD, first) is None


def test_the_run_reports_link_holds_ids_only() -> None:
    run_id = "4c1422ac-395c-4a94-aac0-5b8e2c1f9a10"
    link = workbench_queue_url(run_id, "https://workbench.example.org/")
    assert link == f"https://workbench.example.org/queue?run={run_id}"
    for unusable in ("", "workbench.example.org", "javascript:alert(1)", "https://"):
        assert workbench_queue_url(run_id, unusable) is None
