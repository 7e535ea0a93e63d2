"""The steward workbench in headless Chromium, on a PostgreSQL ledger: the whole steward loop.

log in → queue (from the run report's link) → row (masked) → reveal with a reason → fix a
cell, the live preview says it passes → save → release → the row is in the warehouse, the
file balance moved, and the admin's audit view lists each step with the steward as actor.
The test also takes the README's screenshots (synthetic data only, the row masked).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from batchbridge.tasks.report import workbench_queue_url
from tests.plugins.browser import Tab
from tests.plugins.workbench import (
    ADMIN,
    CANARIES,
    STEWARD,
    Workbench,
    release_row,
    reveal,
    save_fix,
    sign_in,
    surname_row,
    type_fix,
)

pytestmark = pytest.mark.integration

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
UPDATE_ENV = "BATCHBRIDGE_UPDATE_SCREENSHOTS"


def screenshot(tab: Tab, tmp_path: Path, name: str, *, full_page: bool = False) -> None:
    """Into the test's folder; into docs/images/ only when asked (CI leaves the tree clean)."""
    shot = tmp_path / name
    tab.page.screenshot(path=str(shot), full_page=full_page)
    if os.environ.get(UPDATE_ENV) == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, IMAGES / name)


def cell(tab: Tab, element_id: str) -> int:
    """A number on the file balance page."""
    return int(tab.page.locator(f"#{element_id}").inner_text())


def test_whole_steward_loop(workbench: Workbench, tab: Tab, tmp_path: Path) -> None:
    target = surname_row(workbench)
    row_id, run_id = int(target["id"]), str(target["run_id"])
    warehouse_before = len(workbench.sql("SELECT 1 FROM lab_result"))
    page = tab.page

    # The run report's link (ids only) asks for a login first, then opens the queue
    # filtered by that run.
    link = str(workbench_queue_url(run_id, workbench.url))
    page.goto(link)
    assert "/login" in page.url
    assert page.get_by_role("heading", name="Sign in").is_visible()
    page.get_by_label("User name").fill(STEWARD)
    page.get_by_label("Password").fill(workbench.passwords[STEWARD])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert page.url == link  # the run filter survived the login
    listed = page.locator("table.queue tbody tr")
    assert listed.count() == 5  # acme_lab's rows only; globex_clinic's stay out of sight
    assert page.locator("table.queue").get_by_text("globex").count() == 0
    balance_page = f"{workbench.url}/files/{workbench.acme_file_id}"
    page.goto(balance_page)
    assert (cell(tab, "loaded-after-fix"), cell(tab, "still-quarantined")) == (0, 5)
    page.goto(f"{workbench.url}/queue")
    screenshot(tab, tmp_path, "workbench-queue.png", full_page=True)

    # Row page: masked, the failing cell explained.
    page.locator(f"table.queue a[href='/rows/{row_id}']").click()
    page.wait_for_url(f"**/rows/{row_id}")
    assert page.get_by_text("masked: first character and length").is_visible()
    assert page.locator("tr.failing").first.is_visible()
    masked = page.content()
    assert not any(c in masked for c in CANARIES)
    # The README's picture: the masked values and the reveal form, not the whole page.
    page.set_viewport_size({"width": 1280, "height": 1150})
    screenshot(tab, tmp_path, "workbench-row.png")
    page.set_viewport_size({"width": 1280, "height": 800})

    # Reveal (a reason is required), then fix with the live preview, then save.
    reveal(tab, "ticket 4711: confirm the surname")
    assert page.get_by_text("Values shown in clear").is_visible()
    preview = page.locator("#preview")
    type_fix(tab, "patient_dob", "not a date")
    expect(preview).to_contain_text("patient_dob:iso_date")
    expect(preview).to_contain_text("Would still fail")
    page.locator("#set-patient_dob").fill("")
    type_fix(tab, "patient_last_name", "Fixedname")
    expect(preview).to_contain_text("Would pass now")
    save_fix(tab, "surname from the clinic, ticket 4711")
    assert "Fix saved" in page.locator("main .flash").first.inner_text()

    # Release: re-validated and loaded under a new load id, with the file's lineage.
    assert "1 row(s) released and loaded" in release_row(tab, "ticket 4711")
    warehouse = workbench.sql(
        "SELECT file_id, source_row FROM lab_result WHERE file_id = %s AND source_row = %s",
        workbench.acme_file_id,
        target["row_number"],
    )
    assert len(warehouse) == 1
    assert len(workbench.sql("SELECT 1 FROM lab_result")) == warehouse_before + 1
    (status,) = workbench.sql("SELECT status FROM quarantined_rows WHERE id = %s", row_id)
    assert status["status"] == "released"

    # File balance: one more loaded after fix, one fewer still quarantined, balanced.
    page.goto(balance_page)
    assert (cell(tab, "loaded-after-fix"), cell(tab, "still-quarantined")) == (1, 4)
    assert cell(tab, "rows-read") == sum(
        cell(tab, c)
        for c in ("loaded-first-run", "loaded-after-fix", "still-quarantined", "discarded")
    )
    assert page.get_by_text("Balanced:").is_visible()

    # The admin's audit view: reveal, fix and release of the row, each by the steward.
    admin = tab.another()
    try:
        sign_in(admin, workbench, ADMIN)
        admin.page.goto(f"{workbench.url}/audit?row={row_id}")
        rows = admin.page.locator("table.audit tbody tr")
        seen = {
            (r.locator("td").nth(2).inner_text(), r.locator("td").nth(3).inner_text())
            for r in rows.all()
        }
        assert {(STEWARD, "reveal"), (STEWARD, "fix"), (STEWARD, "release")} <= seen
        admin.page.get_by_role("button", name="Verify chain").click()
        admin.page.wait_for_load_state()
        assert "Chain intact" in admin.page.locator("#chain-result").inner_text()
    finally:
        admin.context.close()
