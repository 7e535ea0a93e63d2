"""The command line: feed listing and checks, exit codes from the error tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchbridge.cli.app import main

FEEDS_DIR = Path(__file__).resolve().parents[2] / "deployments" / "feeds"


def test_feeds_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["feeds", "list", "--config-dir", str(FEEDS_DIR)]) == 0
    assert "lab_results" in capsys.readouterr().out


def test_feeds_check_names_missing_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_LAB_PGP_PRIVATE_KEY", raising=False)
    assert main(["feeds", "check", "lab_results", "--config-dir", str(FEEDS_DIR)]) == 2
    out = capsys.readouterr().out
    assert "env:ACME_LAB_PGP_PRIVATE_KEY" in out


def test_unknown_feed_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nope", "--config-dir", str(FEEDS_DIR)]) == 2
    err = capsys.readouterr().err
    assert "feed_not_found" in err and "lab_results" in err
