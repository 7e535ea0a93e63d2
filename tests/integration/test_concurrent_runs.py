"""Two runs of one feed started at once: each file is processed once, by one of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

import prefect.settings
import pytest
from sqlalchemy import func, select

from batchbridge.config.settings import load_settings
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.demo.scenario import LabFeedScenario, lab_file_name
from batchbridge.ledger.models import Load
from batchbridge.ledger.store import LedgerStore
from tests.integration.flow_helpers import target_rows

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

FILE_DATE = date(2026, 11, 20)


def test_simultaneous_runs_process_each_file_once(
    scenario: LabFeedScenario, postgres_url: str
) -> None:
    names = [lab_file_name(FILE_DATE, seq=n) for n in (1, 2, 3)]
    for seq, name in enumerate(names):
        scenario.drop_file(name, generate_lab_rows(300, seed=seq, file_date=FILE_DATE))
    # Both processes talk to the test's Prefect API, as two workers would.
    env = {**os.environ, "PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value())}
    command = [
        sys.executable,
        "-m",
        "batchbridge.cli",
        "run",
        scenario.feed,
        "--config-dir",
        str(scenario.config_dir),
        "--json",
    ]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=240)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    reports = [json.loads(out[out.index("{") :]) for out in outputs]

    processed = sorted(f["name"] for r in reports for f in r["files"])
    assert processed == sorted(names)  # each file by exactly one of the two runs
    settings = load_settings(scenario.config_dir)
    store = LedgerStore.from_url(settings.database_url)
    with store.session() as s:
        loads = s.scalar(select(func.count()).select_from(Load))
    store.engine.dispose()
    assert loads == 3
    # The generator numbers records from 1 in every file: three files, 300 natural keys.
    assert len(target_rows(postgres_url)) == 300
