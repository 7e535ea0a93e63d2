"""Workbench row page: masked view, audited reveal, live preview, fix, release; roles, tenants."""

from __future__ import annotations

import re
import sqlite3

import pytest
from sqlalchemy import select

from batchbridge.ledger.models import AuditEvent, QuarantineEdit
from batchbridge.ledger.store import LedgerStore
from tests.support.steward import LocalLabFeed
from tests.unit.steward_cli_helpers import CANARIES, DANA, EVE
from tests.unit.web_pages_support import (
    OMAR,
    Browser,
    Workbench,
    assert_no_canary,
    build_workbench,
    links,
    revealed_value,
    row_ids,
    title,
)

FIXED = "Okafor"


@pytest.fixture
def workbench(lab: LocalLabFeed, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    return build_workbench(lab, monkeypatch)


@pytest.fixture
def dana(workbench: Workbench) -> Browser:
    return workbench.login(DANA)


def _ledger(workbench: Workbench) -> LedgerStore:
    return LedgerStore.from_url(workbench.settings.database_url)


def _events(workbench: Workbench) -> list[AuditEvent]:
    store = _ledger(workbench)
    try:
        with store.session() as s:
            return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    finally:
        store.engine.dispose()


def _edits(workbench: Workbench) -> list[QuarantineEdit]:
    store = _ledger(workbench)
    try:
        with store.session() as s:
            return list(s.scalars(select(QuarantineEdit)))
    finally:
        store.engine.dispose()


def _surname_row(browser: Browser) -> int:
    return row_ids(browser.get("/queue?reason=patient_last_name:required").text)[0]


def _without_token(html: str) -> str:
    return re.sub(r'(csrf-token" content|name="csrf_token" value)="[^"]*"', "", html)


def test_masked_row_page_highlights_failing_cells_in_words(dana: Browser) -> None:
    row_id = _surname_row(dana)
    page = dana.get(f"/rows/{row_id}")
    assert page.status_code == 200 and title(page.text) == f"Row {row_id} · batchbridge"
    assert page.headers["cache-control"] == "no-store"
    failing = re.search(r'<tr class="failing">\s*<th scope="row"><code>(\w+)</code>', page.text)
    assert failing is not None and failing.group(1) == "patient_last_name"
    assert "patient_last_name must not be empty" in page.text
    assert "(masked: first character and length)" in page.text
    assert 'action="/rows/' in page.text and "Reveal values" in page.text


def test_no_masked_page_names_a_canary_but_the_revealed_one_does(dana: Browser) -> None:
    revealed = []
    for row_id in row_ids(dana.get("/queue").text):
        assert_no_canary(dana.get(f"/rows/{row_id}"))
        revealed.append(dana.post(f"/rows/{row_id}/reveal", {"why": "ticket 9: canary check"}))
    # The scan would see a leak: the planted bad rows carry a canary first name.
    assert any(c in r.text for r in revealed for c in CANARIES)
    for answer in revealed:
        assert answer.headers["cache-control"] == "no-store"
        assert not any(c.lower() in title(answer.text).lower() for c in CANARIES)
        assert all(not any(c in u for c in CANARIES) for u in links(answer.text))


def test_reveal_needs_a_reason_and_is_audited_with_it(workbench: Workbench, dana: Browser) -> None:
    row_id = _surname_row(dana)
    refused = dana.post(f"/rows/{row_id}/reveal", {"why": "  "})
    assert refused.status_code == 400 and "needs a reason" in refused.text
    assert "values revealed" not in refused.text and "reveal" not in [
        e.action for e in _events(workbench)
    ]
    shown = dana.post(f"/rows/{row_id}/reveal", {"why": "ticket 4711: surname"})
    assert shown.status_code == 200 and "Values shown in clear" in shown.text
    event = [e for e in _events(workbench) if e.action == "reveal"][-1]
    assert (event.actor, event.reason, event.object_ids) == (
        DANA,
        "ticket 4711: surname",
        [str(row_id)],
    )
    assert dana.post(f"/rows/{row_id}/reveal", {"why": "x"}, csrf=False).status_code == 403


def test_preview_says_pass_or_the_rule_and_saves_nothing(
    workbench: Workbench, dana: Browser
) -> None:
    row_id = _surname_row(dana)
    dana.get(f"/rows/{row_id}")
    good = dana.htmx(f"/rows/{row_id}/preview", {"set:patient_last_name": FIXED})
    assert good.status_code == 200 and "Would pass now" in good.text
    assert FIXED not in good.text and "<html" not in good.text  # a fragment, no echo
    still = dana.htmx(f"/rows/{row_id}/preview", {"set:patient_last_name": ""})
    assert "Would still fail" in still.text and "patient_last_name:required" in still.text
    worse = dana.htmx(
        f"/rows/{row_id}/preview",
        {"set:patient_last_name": FIXED, "set:ordering_provider_npi": "1234567890"},
    )
    assert "ordering_provider_npi:npi_luhn" in worse.text and "NPI Luhn" in worse.text
    emptied = dana.htmx(
        f"/rows/{row_id}/preview", {"set:patient_last_name": FIXED, "blank:test_name": "1"}
    )
    assert "test_name:required" in emptied.text
    unknown = dana.htmx(f"/rows/{row_id}/preview", {"set:surname": FIXED})
    assert "unknown column" in unknown.text and FIXED not in unknown.text
    assert _edits(workbench) == []
    refused = dana.client.post(f"/rows/{row_id}/preview", data={"set:patient_last_name": FIXED})
    assert refused.status_code == 403


def test_fix_then_release_loads_the_row_and_moves_the_balance(
    workbench: Workbench, dana: Browser
) -> None:
    row_id = _surname_row(dana)
    page = dana.get(f"/rows/{row_id}")
    file_link = next(u for u in links(page.text) if u.startswith("/files/"))
    before = dana.get(file_link)
    assert 'id="loaded-after-fix">0<' in before.text and 'id="still-quarantined">3<' in before.text

    missing_why = dana.post(f"/rows/{row_id}/fix", {"set:patient_last_name": FIXED})
    assert missing_why.status_code == 400 and _edits(workbench) == []
    nothing = dana.post(f"/rows/{row_id}/fix", {"why": "t-1"})
    assert nothing.status_code == 400 and "nothing to change" in nothing.text
    no_token = dana.post(
        f"/rows/{row_id}/fix", {"set:patient_last_name": FIXED, "why": "t-1"}, csrf=False
    )
    assert no_token.status_code == 403 and _edits(workbench) == []

    fixed = dana.post(
        f"/rows/{row_id}/fix", {"set:patient_last_name": FIXED, "why": "surname from the clinic"}
    )
    assert fixed.status_code == 200 and str(fixed.url).endswith(f"/rows/{row_id}?done=fixed")
    assert "Fix saved" in fixed.text and "fixed (pending release)" in fixed.text
    assert FIXED not in fixed.text  # the page after the fix is masked again
    (edit,) = _edits(workbench)
    assert (edit.actor, edit.source, edit.columns) == (DANA, "web", ["patient_last_name"])
    assert "surname from the clinic" in fixed.text  # the audit history, with the reason

    record = revealed_value(dana.post(f"/rows/{row_id}/reveal", {"why": "t-2"}).text, "record_id")
    released = dana.post(f"/rows/{row_id}/release", {"why": "ticket 4711"})
    assert released.status_code == 200 and "1 row(s) released and loaded" in released.text
    after = dana.get(file_link)
    assert 'id="loaded-after-fix">1<' in after.text and 'id="still-quarantined">2<' in after.text
    assert "Balanced" in after.text
    with sqlite3.connect(workbench.lab.warehouse_path) as conn:
        loaded = {found for (found,) in conn.execute("SELECT record_id FROM lab_result")}
    assert record in loaded
    again = dana.post(f"/rows/{row_id}/release", {})
    assert "Nothing released" in again.text and "released already" in again.text
    assert dana.post(f"/rows/{row_id}/fix", {"set:test_name": "x", "why": "t"}).status_code == 409
    actions = [e.action for e in _events(workbench) if e.actor == DANA]
    assert {"fix", "release", "report"} <= set(actions)


def test_discard_needs_a_reason(workbench: Workbench, dana: Browser) -> None:
    row_id = _surname_row(dana)
    assert dana.post(f"/rows/{row_id}/discard", {"why": ""}).status_code == 400
    done = dana.post(f"/rows/{row_id}/discard", {"why": "duplicate of a corrected file"})
    assert "Row discarded" in done.text and "Discard this row" not in done.text
    assert [e.reason for e in _events(workbench) if e.action == "discard"] == [
        "duplicate of a corrected file"
    ]


def test_viewer_sees_masked_rows_but_may_not_act(workbench: Workbench, dana: Browser) -> None:
    row_id = _surname_row(dana)
    omar = workbench.login(OMAR)
    page = omar.get(f"/rows/{row_id}")
    assert page.status_code == 200 and "Reveal values" not in page.text
    assert "Save fix" not in page.text
    assert_no_canary(page)
    for action, data in (
        ("reveal", {"why": "curious"}),
        ("fix", {"set:patient_last_name": FIXED, "why": "t"}),
        ("release", {"why": "t"}),
        ("discard", {"why": "t"}),
    ):
        answer = omar.post(f"/rows/{row_id}/{action}", data)
        assert answer.status_code == 403, action
        assert "viewer" in answer.text and FIXED not in answer.text
    assert omar.htmx(f"/rows/{row_id}/preview", {"set:patient_last_name": FIXED}).status_code == 403
    assert _edits(workbench) == []
    denied = [e.details for e in _events(workbench) if e.action == "access_denied"]
    assert {"attempted": "reveal"} in denied and {"attempted": "release"} in denied


def test_another_tenants_row_is_a_404_like_a_missing_one(
    workbench: Workbench, dana: Browser
) -> None:
    row_id = _surname_row(dana)
    eve = workbench.login(EVE)
    foreign = eve.get(f"/rows/{row_id}")
    missing = eve.get("/rows/999999")
    assert foreign.status_code == missing.status_code == 404
    assert _without_token(foreign.text) == _without_token(missing.text)
    assert str(row_id) not in foreign.text.split("<main")[1]
    for action in ("reveal", "fix", "preview", "release", "discard"):
        answer = eve.post(f"/rows/{row_id}/{action}", {"why": "t", "set:test_name": "x"})
        assert answer.status_code == 404, action
    assert eve.get("/rows/not-a-number").status_code == 400
