"""Workbench bulk actions, file balance and audit pages: counts first, roles, tenants, the chain."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select, update

from batchbridge.ledger.models import AuditEvent
from batchbridge.ledger.store import LedgerStore
from tests.support.steward import LocalLabFeed
from tests.unit.steward_cli_helpers import DANA, EVE, KIM
from tests.unit.web_pages_support import (
    OMAR,
    Browser,
    Workbench,
    add_unmapped_code,
    assert_no_canary,
    build_workbench,
    links,
    revealed_value,
    row_ids,
)

BY_RULE = "/bulk/release?feed=lab_results&reason=unmapped_code"


@pytest.fixture
def workbench(lab: LocalLabFeed, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    return build_workbench(lab, monkeypatch)


@pytest.fixture
def dana(workbench: Workbench) -> Browser:
    return workbench.login(DANA)


def _events(workbench: Workbench) -> list[AuditEvent]:
    store = LedgerStore.from_url(workbench.settings.database_url)
    try:
        with store.session() as s:
            return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    finally:
        store.engine.dispose()


def _file_id(browser: Browser) -> str:
    page = browser.get("/queue")
    return next(u for u in links(page.text) if u.startswith("/files/")).split("/")[-1]


def _hidden(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))


def test_bulk_release_confirms_counts_then_reports_what_it_did(
    workbench: Workbench, dana: Browser
) -> None:
    before = len(_events(workbench))
    confirm = dana.get(BY_RULE)
    assert confirm.status_code == 200 and "<strong>2</strong> row(s) would be taken" in confirm.text
    assert "local_test_code:unmapped_code" in confirm.text and "Release 2 row(s)" in confirm.text
    assert [e.details for e in _events(workbench)[before:]] == [
        {
            "filters": {"feed": "lab_results", "reason": "unmapped_code"},
            "matched": 2,
            "for": "release",
        }
    ]  # the confirmation counted (audited as a listing) and changed nothing
    form = _hidden(confirm.text)
    del form["csrf_token"]

    nothing = dana.post("/bulk/release", form)
    assert nothing.status_code == 200 and "Nothing released" in nothing.text
    assert (
        "Still failing" in nothing.text and "is not in the feed&#39;s mapping table" in nothing.text
    )
    add_unmapped_code(workbench.lab)
    done = dana.post("/bulk/release", {**form, "why": "mapping updated, ticket 88"})
    assert "2 row(s) released and loaded" in done.text
    release = [e for e in _events(workbench) if e.action == "release"][-1]
    assert (release.actor, release.reason) == (DANA, "mapping updated, ticket 88")
    balance = dana.get(f"/files/{_file_id(dana)}")
    assert 'id="loaded-after-fix">2<' in balance.text
    assert dana.post("/bulk/release", form, csrf=False).status_code == 403
    assert "No quarantined row matches" in dana.get(BY_RULE).text  # all settled now


def test_bulk_discard_needs_a_reason_and_settles_the_selection(
    workbench: Workbench, dana: Browser
) -> None:
    file_id = _file_id(dana)
    confirm = dana.get(f"/bulk/discard?file={file_id}&reason=patient_last_name:required")
    assert "<strong>1</strong> row(s) would be taken" in confirm.text
    form = {k: v for k, v in _hidden(confirm.text).items() if k != "csrf_token"}
    assert form == {"feed": "", "file": file_id, "reason": "patient_last_name:required"}
    refused = dana.post("/bulk/discard", form)
    assert refused.status_code == 400 and "needs a reason" in refused.text
    done = dana.post("/bulk/discard", {**form, "why": "test upload, ticket 5"})
    assert "1 row(s) discarded" in done.text
    assert 'id="discarded">1<' in dana.get(f"/files/{file_id}").text
    again = dana.post("/bulk/discard", {**form, "why": "again"})
    assert "Nothing discarded" in again.text


def test_bulk_pages_refuse_viewers_other_tenants_and_bad_input(
    workbench: Workbench, dana: Browser
) -> None:
    omar = workbench.login(OMAR)
    assert omar.get(BY_RULE).status_code == 403
    assert omar.post("/bulk/release", {"feed": "lab_results"}).status_code == 403
    assert omar.post("/bulk/discard", {"feed": "lab_results", "why": "t"}).status_code == 403
    assert "Release these rows" not in omar.get("/queue?feed=lab_results").text
    eve = workbench.login(EVE)
    assert eve.get(f"/bulk/release?file={_file_id(dana)}").status_code == 404
    foreign_feed = eve.post("/bulk/release", {"feed": "lab_results"})
    assert "Nothing released" in foreign_feed.text
    assert dana.get("/bulk/release").status_code == 400
    assert dana.get("/bulk/explode?feed=lab_results").status_code == 400
    assert dana.get("/bulk/release?reason=Zebulonquix%20!").status_code == 400


def test_file_balance_is_live_and_tenant_scoped(workbench: Workbench, dana: Browser) -> None:
    file_id = _file_id(dana)
    page = dana.get(f"/files/{file_id}")
    assert page.status_code == 200 and 'id="rows-read">30<' in page.text
    assert 'id="loaded-first-run">27<' in page.text and "Balanced" in page.text
    assert f'href="/bulk/release?file={file_id}"' in page.text
    report = _events(workbench)[-1]
    assert (report.action, report.object_type, report.object_ids) == ("report", "file", [file_id])
    assert_no_canary(page)
    foreign = dana.get(f"/files/{workbench.globex_file_id}")
    missing = dana.get("/files/0f0e0d0c-0000-4000-8000-000000000001")
    assert foreign.status_code == missing.status_code == 404
    assert workbench.globex_file_id not in foreign.text
    assert dana.get("/files/not-an-id").status_code in (400, 404)
    assert workbench.login(OMAR).get(f"/files/{file_id}").status_code == 200


def test_audit_page_is_for_admins_and_verifies_the_chain(
    workbench: Workbench, dana: Browser
) -> None:
    row_id = row_ids(dana.get("/queue").text)[0]
    dana.post(f"/rows/{row_id}/reveal", {"why": "ticket 31"})
    assert dana.get("/audit").status_code == 403
    kim = workbench.login(KIM)
    assert 'href="/audit"' in kim.get("/queue").text
    page = kim.get(f"/audit?row={row_id}")
    assert page.status_code == 200 and "ticket 31" in page.text
    assert f'href="/rows/{row_id}"' in page.text
    assert_no_canary(page)
    by_actor = kim.get(f"/audit?actor={DANA}&action=reveal")
    assert by_actor.text.count("<td>reveal</td>") == 1
    assert "0 event(s)" in kim.get("/audit?since=2999-01-01").text
    assert kim.get("/audit?since=2026-02-31").status_code == 400
    verified = kim.post("/audit/verify", {})
    assert verified.status_code == 200 and "Chain intact" in verified.text
    assert kim.post("/audit/verify", {}, csrf=False).status_code == 403

    store = LedgerStore.from_url(workbench.settings.database_url)
    try:
        with store.session() as s:
            s.execute(update(AuditEvent).where(AuditEvent.id == 2).values(reason="edited"))
    finally:
        store.engine.dispose()
    broken = kim.post("/audit/verify", {})
    assert "Chain broken" in broken.text and "event 2: content does not match" in broken.text


def test_no_page_names_a_canary_or_puts_a_record_id_in_a_url(
    workbench: Workbench, dana: Browser
) -> None:
    ids = row_ids(dana.get("/queue?status=all").text)
    records = [
        revealed_value(dana.post(f"/rows/{i}/reveal", {"why": "t-6"}).text, "record_id")
        for i in ids
    ]
    assert all(records)
    kim = workbench.login(KIM)
    file_id = _file_id(dana)
    pages = [
        dana.get("/queue"),
        dana.get("/queue?feed=lab_results&status=all"),
        dana.post("/queue/search", {"record_id": records[0]}),
        *(dana.get(f"/rows/{i}") for i in ids),
        dana.htmx(f"/rows/{ids[0]}/preview", {"set:test_name": "x"}),
        dana.get("/runs"),
        dana.get(f"/files/{file_id}"),
        dana.get("/bulk/release?feed=lab_results"),
        dana.get(f"/bulk/discard?file={file_id}"),
        kim.get("/audit"),
        kim.post("/audit/verify", {}),
    ]
    for answer in pages:
        assert answer.status_code == 200, answer.url
        assert_no_canary(answer)
        urls = [*links(answer.text), str(answer.url), answer.headers.get("location", "")]
        assert not [u for u in urls for r in records if r in u], answer.url
