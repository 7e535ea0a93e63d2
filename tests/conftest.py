"""Shared pytest setup: a fresh Prefect home, and fixture plugins for sshd, PostgreSQL, gpg."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Set before anything imports Prefect, which reads its home (profiles, API URL) once:
# a developer's ~/.prefect profile must never reach the tests.
SESSION_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="batchbridge-tests-prefect-"))
os.environ["PREFECT_HOME"] = str(SESSION_PREFECT_HOME)
for _name in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_API_KEY"):
    os.environ.pop(_name, None)

pytest_plugins = [
    "tests.plugins.sshd",
    "tests.plugins.postgres",
    "tests.plugins.gpg",
    "tests.plugins.prefect",
    "tests.plugins.scenario",
    "tests.plugins.fhir",
    "tests.plugins.browser",
    "tests.plugins.workbench",
]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's Prefect home (the harness's server has stopped by now)."""
    shutil.rmtree(SESSION_PREFECT_HOME, ignore_errors=True)
