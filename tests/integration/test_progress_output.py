"""Terminal progress during a real run: every stage shown with counts, no patient data."""

from __future__ import annotations

import io
import re
from datetime import date

import pytest
from rich.console import Console

from batchbridge import progress
from batchbridge.cli.progress_display import TerminalProgress
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.demo.scenario import LabFeedScenario, lab_file_name
from tests.integration.flow_helpers import run_flow

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

FILE_DATE = date(2026, 11, 20)
CANARIES = ["Zebulonquix", "Orvillecanary"]


def test_progress_shows_each_stage_with_counts_and_no_phi(scenario: LabFeedScenario) -> None:
    rows = generate_lab_rows(
        500,
        seed=3,
        file_date=FILE_DATE,
        bad_rows={"missing_last_name": 2, "bad_npi": 1},
        canary_names=CANARIES,
    )
    name = lab_file_name(FILE_DATE)
    scenario.drop_file(name, rows)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)
    with TerminalProgress(console) as display, progress.listening(display):
        report = run_flow(scenario)
    assert report.files[0].outcome == "reconciled"
    shown = screen.getvalue()
    # decrypt, validate and transform run interleaved, chunk by chunk: one "stream" stage.
    for stage in ("discover", "fetch", "stream", "quarantine", "load"):
        # A finished stage leaves a line: stage, file (or feed), count, seconds.
        assert re.search(rf"(^|\x1b\[2K){stage} +\S+  .*\d\.\d\ds", shown, re.M), stage
    assert "500 rows" in shown and "497 rows" in shown  # 500 streamed, 497 loaded
    assert " kB" in shown or " MB" in shown  # fetch counts bytes
    assert not any(c.lower() in shown.lower() for c in CANARIES)


def test_without_a_listener_progress_calls_are_silent() -> None:
    with progress.stage("f", "validate", total=3):
        progress.advance(3)
        progress.finished_with(3)
