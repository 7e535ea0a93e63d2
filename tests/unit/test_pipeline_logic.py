"""Pure stage logic: file selection, file dates, reconciliation, report rendering."""

from __future__ import annotations

from datetime import date

import pytest

from batchbridge.connectors.sources.base import RemoteFile
from batchbridge.connectors.sources.selection import select_files
from batchbridge.connectors.targets.base import LoadResult
from batchbridge.connectors.targets.loading import reconcile_counts
from batchbridge.errors import ReconciliationError
from batchbridge.ledger.run_report import FileReport, RunReport, TargetCounts, render_text
from batchbridge.tasks.report import render_markdown
from batchbridge.validations.parse import file_date_from_name


def _remote(name: str) -> RemoteFile:
    return RemoteFile(name=name, size=1, mtime=0)


def test_select_skips_done_unless_forced() -> None:
    ready = [_remote("a"), _remote("b")]
    chosen = select_files(ready, is_done={"a": True}, requested=None, force=False)
    assert [r.name for r in chosen.to_process] == ["b"]
    assert chosen.skipped == {"a": "already_done"}
    forced = select_files(ready, is_done={"a": True}, requested=["a", "zz"], force=True)
    assert [r.name for r in forced.to_process] == ["a"]
    assert forced.skipped == {"zz": "not_ready_on_source"}


def test_file_date_from_name() -> None:
    fallback = date(2026, 1, 1)
    assert file_date_from_name("LAB_RESULTS_ACME_20261120_2.csv.pgp", fallback) == date(
        2026, 11, 20
    )
    assert file_date_from_name("LAB_RESULTS_ACME_20261340.csv.pgp", fallback) == fallback
    assert file_date_from_name("x.pgp", fallback) == fallback


def _load(**overrides: int) -> LoadResult:
    counts = {
        "rows_inserted": 8,
        "rows_updated": 0,
        "rows_unchanged": 0,
        "rows_rejected": 0,
        "rows_confirmed": 8,
    }
    counts.update(overrides)
    return LoadResult(target="wh", load_id="l", **counts)


def test_reconcile_balanced() -> None:
    reconcile_counts(
        rows_read=10, rows_declared=10, rows_valid=8, rows_quarantined=2, loads=[_load()]
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"rows_declared": 11}, "declared 11"),
        ({"rows_quarantined": 1}, r"valid 8 \+ quarantined 1"),
        ({"loads": [_load(rows_confirmed=7)]}, "confirmed 7"),
        ({"loads": [_load(rows_inserted=7)]}, r"inserted\+updated"),
    ],
)
def test_reconcile_imbalances_fail_loudly(kwargs: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {
        "rows_read": 10,
        "rows_declared": 10,
        "rows_valid": 8,
        "rows_quarantined": 2,
        "loads": [_load()],
    }
    args.update(kwargs)
    with pytest.raises(ReconciliationError, match=fragment):
        reconcile_counts(**args)  # type: ignore[arg-type]


def test_report_renders_and_round_trips() -> None:
    report = RunReport(run_id="r1", tenant="t", feed="lab_results", status="failed")
    report.files.append(
        FileReport(
            name="a.pgp",
            file_id="f1",
            outcome="reconciled",
            rows_read=3,
            rows_valid=2,
            rows_quarantined=1,
            quarantine_reasons={"patient_dob:date_in_range": 1},
            targets={"wh": TargetCounts(sent=2, inserted=2, confirmed=2)},
            balanced=True,
        )
    )
    report.files.append(
        FileReport(
            name="b.pgp",
            file_id="f2",
            outcome="failed",
            is_rerun=True,
            failed_stage="decrypt",
            reason="wrong_signer",
            message="signed by another key",
        )
    )
    report.skipped["c.pgp"] = "already_done"
    text = render_text(report)
    assert "a.pgp" in text and "wrong_signer" in text and "already_done" in text
    assert "patient_dob:date_in_range" in render_markdown(report)
    again = RunReport.from_dict(report.to_dict())
    assert again.to_dict() == report.to_dict()
    assert report.totals()["rows_read"] == 3
