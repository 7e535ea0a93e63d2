"""What the terminal shows when a run meets a wrong setup: one clear line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date

import prefect.settings
import pytest
import yaml

from batchbridge.demo.keys import generate_ed25519
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.demo.scenario import LabFeedScenario, lab_file_name

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

FILE_DATE = date(2026, 11, 20)


def _cli(
    scenario: LabFeedScenario, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    command = [sys.executable, "-m", "batchbridge.cli", *args]
    command += ["--config-dir", str(scenario.config_dir)]
    done = subprocess.run(
        command, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stdout, done.stderr


def test_a_changed_host_key_is_one_clear_line(scenario: LabFeedScenario) -> None:
    scenario.drop_file(lab_file_name(FILE_DATE), generate_lab_rows(20, seed=1, file_date=FILE_DATE))
    feed = yaml.safe_load(scenario.feed_path.read_text(encoding="utf-8"))
    feed["source"]["host_keys"] = [generate_ed25519().public_line]  # the server's key "changed"
    scenario.feed_path.write_text(yaml.safe_dump(feed), encoding="utf-8")
    api = {"PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value())}

    code, out, err = _cli(scenario, "run", scenario.feed, env=api)
    assert code == 9
    assert "Traceback" not in out + err
    (reason,) = [line for line in out.splitlines() if "host_key_mismatch" in line]
    assert reason.startswith("run failed at discover: [host_key_mismatch]")
    # The report says it once; Prefect's console repeats nothing (its UI has the logs).
    assert err == ""


def test_a_missing_secret_fails_before_any_server_starts(scenario: LabFeedScenario) -> None:
    (scenario.root / "secrets" / "quarantine_key").unlink()
    # No Prefect API given: a preflight failure must come before the temporary server.
    env = {"PREFECT_API_URL": "", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"}
    code, _, err = _cli(scenario, "run", scenario.feed, env=env)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error [config_invalid]: feed lab_results")
    assert "quarantine_key" in err and "Traceback" not in err
