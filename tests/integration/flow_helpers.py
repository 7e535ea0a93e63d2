"""Helpers for end-to-end flow tests: build a scenario, run the flow, read the target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from batchbridge.config.settings import load_settings
from batchbridge.demo.scenario import LabFeedScenario
from batchbridge.flows.nightly import nightly_feed
from batchbridge.ledger.run_report import RunReport
from batchbridge.ledger.store import LedgerStore


def run_flow(scenario: LabFeedScenario, **params: Any) -> RunReport:
    """Run the nightly flow once (through Prefect) and return the report from the ledger."""
    state = nightly_feed(
        feed=scenario.feed, config_dir=str(scenario.config_dir), return_state=True, **params
    )
    settings = load_settings(scenario.config_dir)
    store = LedgerStore.from_url(settings.database_url)
    try:
        run = store.run_for_flow_run(str(state.state_details.flow_run_id))
    finally:
        store.engine.dispose()
    assert run is not None and run.report is not None, state.message
    report = RunReport.from_dict(run.report)
    assert state.is_failed() == (report.status == "failed")
    return report


def libpq_url(url: str) -> str:
    """psycopg wants postgresql://, SQLAlchemy URLs say postgresql+psycopg://."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def target_rows(url: str, table: str = "lab_result") -> dict[str, dict[str, Any]]:
    """Every target row by record_id (empty when the table does not exist)."""
    with psycopg.connect(libpq_url(url)) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if exists is None or exists[0] is None:
            return {}
        cur = conn.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed test table name
        names = [d.name for d in cur.description or []]
        return {row[names.index("record_id")]: dict(zip(names, row, strict=True)) for row in cur}


def without_lineage(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows minus the columns a load rewrites (to compare content across runs)."""
    return {
        key: {k: v for k, v in row.items() if k not in {"loaded_at"}} for key, row in rows.items()
    }


def read_bytes_of(path: Path) -> bytes:
    """A file's bytes, or b'' when absent."""
    return path.read_bytes() if path.exists() else b""
