"""Workbench queue and runs pages: the person's tenants only, filters, counts, paging, search."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from batchbridge.ledger.models import AuditEvent, Run
from batchbridge.ledger.store import LedgerStore
from tests.support.steward import LocalLabFeed
from tests.unit.steward_cli_helpers import DANA, EVE
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


def test_queue_lists_the_persons_rows_with_reason_counts(
    workbench: Workbench, dana: Browser
) -> None:
    page = dana.get("/queue")
    assert page.status_code == 200 and title(page.text) == "Queue · batchbridge"
    assert len(row_ids(page.text)) == 3  # acme_lab's rows only, not globex's
    assert "local_test_code:unmapped_code" in page.text
    assert "is not in the feed&#39;s mapping table" in page.text  # the rule in words
    assert 'href="/bulk/release?feed=' not in page.text  # bulk needs a feed or file filter
    assert page.headers["cache-control"] == "no-store"
    assert_no_canary(page)
    assert _events(workbench)[-1].action == "list"
    # The app's home is the queue too, with the same filters (the runs' links use /?run=).
    assert row_ids(dana.get("/").text) == row_ids(page.text)

    eve = workbench.login(EVE)
    theirs = eve.get("/queue")
    assert len(row_ids(theirs.text)) == 1 and not set(row_ids(theirs.text)) & set(
        row_ids(page.text)
    )
    assert eve.get("/queue?tenant=acme_lab").status_code == 403


def test_queue_filters_and_pages(workbench: Workbench, dana: Browser) -> None:
    by_rule = dana.get("/queue?feed=lab_results&reason=unmapped_code")
    assert len(row_ids(by_rule.text)) == 2
    assert 'href="/bulk/release?feed=lab_results&amp;reason=unmapped_code"' in by_rule.text
    assert len(row_ids(dana.get("/queue?reason=patient_last_name:required").text)) == 1
    assert row_ids(dana.get("/queue?status=released").text) == []
    assert len(row_ids(dana.get("/queue?status=all&age=lt1d").text)) == 3
    assert row_ids(dana.get("/queue?age=gt7d").text) == []
    first = dana.get("/queue?limit=25")
    file_id = next(u for u in links(first.text) if u.startswith("/files/")).split("/")[-1]
    assert len(row_ids(dana.get(f"/queue?file={file_id[:8]}").text)) == 3  # a prefix will do
    run_links = [u for u in links(dana.get("/runs").text) if "run=" in u]
    assert len(run_links) == 1 and len(row_ids(dana.get(run_links[0]).text)) == 3

    paged = dana.get("/queue?limit=2")
    assert len(row_ids(paged.text)) == 2 and "Rows 1 to 2 of 3" in paged.text
    following = [u for u in links(paged.text) if "offset=2" in u]
    assert following == ["/queue?offset=2&limit=2"]
    rest = dana.get(following[0])
    assert len(row_ids(rest.text)) == 1 and "local_test_code:unmapped_code" in rest.text


@pytest.mark.parametrize(
    "query",
    [
        "status=fixd",
        "reason=Zebulonquix%20x",
        "tenant=Zebulonquix!",
        "age=old",
        "limit=7777",
        "run=zz",
    ],
)
def test_bad_filters_answer_400_without_echo(dana: Browser, query: str) -> None:
    answer = dana.get(f"/queue?{query}")
    assert answer.status_code == 400
    value = query.split("=", 1)[1].replace("%20", " ")
    assert value not in answer.text
    assert_no_canary(answer)


def test_unknown_or_foreign_ids_in_filters_say_so_without_echo(
    workbench: Workbench, dana: Browser
) -> None:
    answer = dana.get("/queue?run=abcdef12")
    assert answer.status_code == 200 and "no run of your tenants has that id" in answer.text
    assert "abcdef12" not in answer.text.replace('value="abcdef12"', "")
    foreign = dana.get(f"/queue?file={workbench.globex_file_id}")
    assert "no file of your tenants has that id" in foreign.text
    assert row_ids(foreign.text) == []


def test_record_id_search_is_a_post_and_never_echoes_the_id(
    workbench: Workbench, dana: Browser
) -> None:
    row_id = row_ids(dana.get("/queue?reason=patient_last_name:required").text)[0]
    revealed = dana.post(f"/rows/{row_id}/reveal", {"why": "ticket 4: which record"})
    record = revealed_value(revealed.text, "record_id")
    assert record
    found = dana.post("/queue/search", {"record_id": record})
    assert found.status_code == 200 and row_ids(found.text) == [row_id]
    assert record not in found.text and "record_id" not in str(found.url)
    assert all(record not in u for r in dana.seen for u in [*links(r.text), str(r.url)])
    search = [e for e in _events(workbench) if e.action == "search"][-1]
    assert search.actor == DANA and record not in str(search.details)
    assert row_ids(workbench.login(EVE).post("/queue/search", {"record_id": record}).text) == []
    assert dana.post("/queue/search", {"record_id": record}, csrf=False).status_code == 403
    empty = dana.post("/queue/search", {"record_id": " "})
    assert empty.status_code == 400 and "a record id is one line" in empty.text


def test_runs_page_lists_the_persons_runs_with_links(workbench: Workbench, dana: Browser) -> None:
    page = dana.get("/runs")
    assert page.status_code == 200 and "lab_results" in page.text
    assert "globex_lab" not in page.text and "Prefect flow run" not in page.text
    assert "/ 27 / 3" in page.text  # rows read / valid / quarantined
    assert workbench.login(OMAR).get("/runs").status_code == 200
    workbench.settings = replace(workbench.settings, prefect_ui_url="https://prefect.example/")
    store = LedgerStore.from_url(workbench.settings.database_url)
    try:
        with store.session() as s:
            for run in s.scalars(select(Run)):
                run.flow_run_id = "0f0e0d0c-0000-4000-8000-000000000001"
    finally:
        store.engine.dispose()
    linked = workbench.login(DANA).get("/runs")
    assert (
        'href="https://prefect.example/runs/flow-run/0f0e0d0c-0000-4000-8000-000000000001"'
        in linked.text
    )
