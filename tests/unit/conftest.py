"""Unit-test fixtures: the steward CLI's lab feed (30 rows, 3 quarantined, canary names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.steward import LocalLabFeed
from tests.unit.steward_cli_helpers import build_steward_lab


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalLabFeed:
    """A lab feed ingested without Prefect; the acting steward is DANA."""
    return build_steward_lab(tmp_path, monkeypatch)
