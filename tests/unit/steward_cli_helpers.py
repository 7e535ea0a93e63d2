"""Shared by the steward CLI tests: a local lab feed with quarantined rows, and CLI helpers."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from batchbridge.cli.app import main
from batchbridge.demo.lab_data import generate_lab_rows
from tests.support.steward import LocalLabFeed, build_local_lab_feed

FILE_DATE = date(2026, 11, 20)
CANARIES = ["Zebulonquix", "Orvillecanary"]
DANA = "dana.steward@acme-health.example"
KIM = "kim.admin@acme-health.example"
EVE = "eve.steward@globex.example"


def build_steward_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalLabFeed:
    built = build_local_lab_feed(tmp_path)
    stewards = tmp_path / "stewards.yaml"
    stewards.write_text(
        f"stewards:\n  {DANA}:\n    acme_lab: steward\n  {KIM}:\n    acme_lab: admin\n"
        f"  {EVE}:\n    globex: steward\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(stewards))
    monkeypatch.setenv("BATCHBRIDGE_DATABASE_URL", built.settings.database_url)
    monkeypatch.setenv("BATCHBRIDGE_ACTOR", DANA)
    rows = generate_lab_rows(
        30,
        seed=11,
        file_date=FILE_DATE,
        bad_rows={"missing_last_name": 1, "unmapped_code": 2},
        canary_names=CANARIES,
    )
    built.ingest(rows, file_date=FILE_DATE)
    return built


def _cli(lab: LocalLabFeed, *args: str) -> int:
    return main([*args, "--config-dir", str(lab.config_dir)])


def _listed(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str], *args: str
) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert _cli(lab, "quarantine", "list", "--json", *args) == 0
    listed: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return listed


def _no_canary(text: str) -> None:
    assert not any(c.lower() in text.lower() for c in CANARIES)
