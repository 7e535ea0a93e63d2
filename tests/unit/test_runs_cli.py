"""`batchbridge runs list/show`, id prefixes (also in `report`), run names; no PHI printed."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer

from batchbridge.cli.app import main
from batchbridge.cli.runs import parse_since
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.errors import IdLookupError, StewardError
from batchbridge.ledger.models import LedgerFile, Run, RunStatus
from batchbridge.ledger.run_report import FileReport, RunReport, render_text
from batchbridge.ledger.runs_query import RELEASE_KIND, resolve_file_id, resolve_run_id
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.release_report import RELEASE_REPORT_KIND
from tests.support.steward import LocalLabFeed, build_local_lab_feed

FILE_DATE = date(2026, 11, 20)
CANARIES = ["Zebulonquix", "Orvillecanary"]
DANA = "dana.steward@acme-health.example"
FLOW_RUN_ID = "0b7e57e1-1111-4222-8333-444455556666"


@pytest.fixture(autouse=True)
def chicago(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is America/Chicago: lists show local times, the ledger keeps UTC."""
    monkeypatch.setenv("TZ", "America/Chicago")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalLabFeed:
    """A nightly run that loaded a file with canary patients, a failed run, a release run."""
    built = build_local_lab_feed(tmp_path)
    (tmp_path / "stewards.yaml").write_text(
        f"stewards:\n  {DANA}:\n    acme_lab: steward\n", encoding="utf-8"
    )
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(tmp_path / "stewards.yaml"))
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
    _failed_run(built)
    return built


def _store(lab: LocalLabFeed) -> LedgerStore:
    return LedgerStore.from_url(lab.settings.database_url)


def _claim(store: LedgerStore, lab: LocalLabFeed, run_id: str, name: str) -> str:
    claim = store.claim_file(
        run_id=run_id, tenant=lab.tenant, feed=lab.feed, name=name, size=9, force=False
    )
    assert claim is not None
    return claim.file_id


def _failed_run(lab: LocalLabFeed) -> str:
    """A run through Prefect (flow run id) whose one file failed to decrypt."""
    store = _store(lab)
    try:
        run_id = store.start_run(tenant=lab.tenant, feed=lab.feed, flow_run_id=FLOW_RUN_ID)
        file_id = _claim(store, lab, run_id, "LAB_BAD.csv.pgp")
        reason, message = "signature_invalid", "not signed by a pinned partner key"
        store.fail_file(file_id, stage="decrypt", reason=reason, message=message)
        seconds = {"fetch": 0.25, "decrypt": 0.5}
        store.record_run_file(
            run_id=run_id, file_id=file_id, outcome="failed", is_rerun=False, stage_seconds=seconds
        )
        report = RunReport(run_id, lab.tenant, lab.feed, RunStatus.FAILED, FLOW_RUN_ID)
        report.skipped["LAB_OLD.csv.pgp"] = "already_done"
        report.files.append(
            FileReport(
                "LAB_BAD.csv.pgp",
                file_id,
                "failed",
                failed_stage="decrypt",
                reason=reason,
                message=message,
                stage_seconds=seconds,
            )
        )
        store.finish_run(run_id, status=RunStatus.FAILED, report=report.to_dict())
        return run_id
    finally:
        store.engine.dispose()


def _cli(lab: LocalLabFeed, *args: str) -> int:
    return main([*args, "--config-dir", str(lab.config_dir)])


def _out(lab: LocalLabFeed, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert _cli(lab, *args) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _listed(lab: LocalLabFeed, capsys: pytest.CaptureFixture[str], *args: str) -> list[Any]:
    listed: list[Any] = json.loads(_out(lab, capsys, "runs", "list", "--json", *args))
    return listed


def _no_canary(text: str) -> None:
    assert not any(c.lower() in text.lower() for c in CANARIES)


def _release_one_row(lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]) -> None:
    rows = json.loads(_out(lab, capsys, "quarantine", "list", "--json", "--reason", "required"))
    row_id = str(rows[0]["id"])
    _out(lab, capsys, "quarantine", "fix", row_id, "--set", "patient_last_name=Fixed")
    _out(lab, capsys, "quarantine", "release", row_id)


def test_list_and_show_print_counts_never_patient_values(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    _release_one_row(lab, capsys)
    text = _out(lab, capsys, "runs", "list")
    header, *lines = text.splitlines()
    assert header.split()[:4] == ["run", "feed", "tenant", "status"]
    assert len(lines) == 3
    release, failed, nightly = lines  # newest first
    assert release.split()[-2:] == ["rerun", "release"] and " 1/0/0 " in release
    assert "failed" in failed and " 0/1/1 " in failed and failed.endswith("nightly")
    assert " 1/0/0 " in nightly and " 30/27/3 " in nightly
    listed = _listed(lab, capsys)
    assert [r["kind"] for r in listed] == [RELEASE_KIND, "nightly", "nightly"]
    assert listed[1]["flow_run_id"] == FLOW_RUN_ID and listed[2]["rows_quarantined"] == 3
    # started: local time (Chicago), ISO minute
    started = datetime.fromisoformat(listed[2]["started_at"]).astimezone()
    assert f"{started:%Y-%m-%d %H:%M}" in nightly
    seen = [text, json.dumps(listed)]
    for run in listed:
        seen.append(_out(lab, capsys, "runs", "show", run["short_id"]))
        seen.append(_out(lab, capsys, "runs", "show", run["id"], "--json"))
    for shown in seen:
        _no_canary(shown)
    nightly_text = seen[-2]
    assert "rows       read 30  declared 30  valid 27  quarantined 3  balanced yes" in nightly_text
    assert "quarantined 2 x local_test_code:unmapped_code" in nightly_text
    assert "target     warehouse: sent 27 inserted 27" in nightly_text
    assert "ledger now" not in nightly_text
    release_shown = json.loads(seen[3])
    assert release_shown["requested_by"] == DANA
    assert release_shown["files"][0]["rows_valid"] == 1  # released


def test_show_traces_a_failed_file_with_reason_timings_and_prefect_run(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    (failed,) = _listed(lab, capsys, "--status", "failed")
    # Neither set, whatever API an earlier test in this process left configured.
    with temporary_settings(restore_defaults={PREFECT_API_URL, PREFECT_UI_URL}):
        text = _out(lab, capsys, "runs", "show", failed["short_id"])
        shown = json.loads(_out(lab, capsys, "runs", "show", failed["id"], "--json"))
    assert f"prefect    flow run {FLOW_RUN_ID}" in text
    assert "/runs/flow-run/" not in text  # no UI configured: no link guessed
    assert "outcome    failed at decrypt: [signature_invalid] not signed by" in text
    assert "seconds    fetch 0.25  decrypt 0.50" in text
    assert "ledger now" not in text  # still failed: no later run took the file on
    assert "LAB_OLD.csv.pgp  (already_done)" in text
    assert shown["prefect_flow_run_url"] is None
    assert shown["files"][0]["stage"] == "decrypt"
    assert shown["files"][0]["stage_seconds"] == {"fetch": 0.25, "decrypt": 0.5}


def test_show_links_the_prefect_ui_when_configured(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    (failed,) = _listed(lab, capsys, "--status", "failed")
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.example:4200/api"}):
        text = _out(lab, capsys, "runs", "show", failed["short_id"])
    assert f"http://prefect.example:4200/runs/flow-run/{FLOW_RUN_ID}" in text


def test_a_run_without_report_shows_what_the_ledger_knows(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _store(lab)
    run_id = store.start_run(tenant=lab.tenant, feed=lab.feed, flow_run_id=None)
    file_id = _claim(store, lab, run_id, "LAB_NEW.csv.pgp")
    store.record_run_file(
        run_id=run_id,
        file_id=file_id,
        outcome="failed",
        is_rerun=False,
        stage_seconds={"fetch": 1.5},
    )
    store.engine.dispose()
    (running,) = _listed(lab, capsys, "--status", "running")
    assert running["files_failed"] == 1 and running["rows_read"] is None
    text = _out(lab, capsys, "runs", "show", run_id[:6])
    assert "status     RUNNING" in text and "took -" in text
    assert "outcome    unfinished, reached discovered" in text
    assert "seconds    fetch 1.50" in text


def test_filters_limit_and_nothing_found(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(_listed(lab, capsys, "--feed", "lab_results")) == 2
    assert len(_listed(lab, capsys, "--tenant", "acme_lab", "--status", "succeeded")) == 1
    assert len(_listed(lab, capsys, "--limit", "1")) == 1
    assert len(_listed(lab, capsys, "--since", "1h")) == 2
    assert _listed(lab, capsys, "--feed", "other_feed") == []
    text = _out(lab, capsys, "runs", "list", "--feed", "other_feed", "--status", "failed")
    assert text.strip() == "no runs match (feed other_feed, status failed)"
    tomorrow = (datetime.now().astimezone() + timedelta(days=1)).date().isoformat()
    text = _out(lab, capsys, "runs", "list", "--since", tomorrow)
    assert text.strip() == f"no runs match (since {tomorrow} 00:00)"


def test_bad_status_and_since_are_one_usage_line(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert _cli(lab, "runs", "list", "--status", "bogus") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error [usage]: Invalid value for '--status'")
    assert all(word in err for word in ("running", "succeeded", "failed"))
    assert _cli(lab, "runs", "list", "--since", "Zebulonquix") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error [usage]: Invalid value for '--since'")
    _no_canary(err)


def test_since_accepts_iso_dates_times_and_ages() -> None:
    now = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("1W", now) == now - timedelta(weeks=1)
    midnight = parse_since("2026-12-01")  # local midnight (Chicago: UTC-6)
    assert midnight.astimezone(UTC) == datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    assert parse_since("2026-12-01T02:00+01:00") == datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    assert parse_since("2026-12-01T02:00Z") == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    for bad in ("yesterday", "2d3h", "-2d", "2026-13-01", ""):
        with pytest.raises(typer.BadParameter):
            parse_since(bad, now)


def _add(
    lab: LocalLabFeed,
    *,
    run_ids: Sequence[str] = (),
    file_ids: Sequence[str] = (),
    tenant: str = "acme_lab",
) -> None:
    store = _store(lab)
    with store.session() as s:
        for ident in run_ids:
            s.add(
                Run(id=ident, tenant=tenant, feed=lab.feed, status=RunStatus.SUCCEEDED, report={})
            )
        for ident in file_ids:
            s.add(LedgerFile(id=ident, tenant=tenant, feed=lab.feed, name=f"F_{ident[:4]}", size=1))
    store.engine.dispose()


def _ids(prefix: str, n: int) -> list[str]:
    return [prefix + str(uuid.uuid4())[len(prefix) :] for _ in range(n)]


def test_unique_prefixes_resolve_and_ambiguous_ones_list_the_candidates(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _ids("abcd1", 12)
    _add(lab, run_ids=runs)
    (unique,) = _ids("beef", 1)
    _add(lab, run_ids=[unique])
    assert "run " + unique in _out(lab, capsys, "runs", "show", "BEEF")
    assert _cli(lab, "runs", "show", "abcd1") == IdLookupError.exit_code == 2
    err = capsys.readouterr().err
    assert err.startswith("error [id_ambiguous]: abcd1 matches 12 run ids: give more of the id")
    assert err.count("acme_lab/lab_results  started ") == 10 and "... and 2 more" in err
    assert _cli(lab, "runs", "show", "abcd1" + runs[0][5:13]) == 0  # more digits: unique
    store = _store(lab)
    with store.session() as s:
        assert resolve_run_id(s, runs[3][:13]) == runs[3]
        with pytest.raises(IdLookupError, match="no ledger file id starts with abcd1"):
            resolve_file_id(s, "abcd1")
    store.engine.dispose()


def test_unknown_and_malformed_ids(lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert _cli(lab, "runs", "show", "ffff0") == 2
    assert capsys.readouterr().err.strip() == "error [id_unknown]: no run id starts with ffff0"
    for bad in ("abc", "Zebulonquix", "12-zz"):
        assert _cli(lab, "runs", "show", bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error [id_invalid]: an id or id prefix is at least 4 hex digits")
        assert bad.lower() not in err.lower()


def test_report_takes_prefixes_of_runs_and_files_within_the_stewards_tenants(
    lab: LocalLabFeed, capsys: pytest.CaptureFixture[str]
) -> None:
    (failed,) = _listed(lab, capsys, "--status", "failed")
    text = _out(lab, capsys, "report", failed["short_id"])
    assert f"batchbridge run {failed['id']}  prefect flow run {FLOW_RUN_ID}" in text
    assert f"details: batchbridge runs show {failed['short_id']}" in text
    (file_id,) = _ids("cafe", 1)
    _add(lab, file_ids=[file_id])
    assert "read" in _out(lab, capsys, "report", file_id[:6])
    # another tenant's run with the same prefix is not a candidate for this steward
    (foreign,) = _ids("cafe", 1)
    _add(lab, run_ids=[foreign], tenant="globex")
    assert _cli(lab, "report", file_id[:4]) == 0
    # a prefix matching a run and a file of the steward's tenants is refused
    (run_id,) = _ids("cafe", 1)
    _add(lab, run_ids=[run_id])
    capsys.readouterr()
    assert _cli(lab, "report", "cafe") == 2
    err = capsys.readouterr().err
    assert "cafe matches 2 run or ledger file ids" in err and foreign not in err
    assert f"run  {run_id}" in err and f"file {file_id}" in err
    assert _cli(lab, "report", "no-such-id") == StewardError.exit_code
    err = capsys.readouterr().err
    assert "no run or file with that id" in err and "no-such-id" not in err


def test_release_kind_matches_the_steward_reports() -> None:
    assert RELEASE_KIND == RELEASE_REPORT_KIND


def test_report_carries_the_flow_run_id_and_reads_older_reports() -> None:
    older = RunReport(run_id="1234abcd-0000", tenant="t", feed="f").to_dict()
    del older["flow_run_id"]
    assert RunReport.from_dict(older).flow_run_id is None
    report = RunReport(run_id="1234abcd-0000", tenant="t", feed="f", flow_run_id=FLOW_RUN_ID)
    assert RunReport.from_dict(report.to_dict()).flow_run_id == FLOW_RUN_ID
    assert f"prefect flow run {FLOW_RUN_ID}" in render_text(report)

    from batchbridge.tasks.report import render_markdown

    markdown = render_markdown(report)
    assert "Ledger run `1234abcd-0000`" in markdown
    assert "`batchbridge runs show 1234abcd`" in markdown


def _context(**flow_run: Any) -> SimpleNamespace:
    fields = {"auto_scheduled": False, "expected_start_time": None, "start_time": None}
    run = SimpleNamespace(**(fields | flow_run))
    context = SimpleNamespace(parameters={"feed": "lab_results"}, flow_run=run)
    return SimpleNamespace(get=lambda: context, context=context)


def test_nightly_run_names_feed_and_time_in_the_feeds_zone(
    lab: LocalLabFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchbridge.flows import nightly

    monkeypatch.setenv("BATCHBRIDGE_CONFIG_DIR", str(lab.config_dir))
    due = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)  # 02:00 in Chicago, the feed's zone
    fake = _context(auto_scheduled=True, expected_start_time=due)
    monkeypatch.setattr(nightly, "FlowRunContext", fake)
    assert nightly.nightly_run_name() == "lab_results 2026-12-03 02:00"
    # a manual run (CLI, UI quick run) is named by its first start, not its due time
    fake.context.flow_run.auto_scheduled = False
    fake.context.flow_run.start_time = due + timedelta(minutes=7)
    assert nightly.nightly_run_name() == "lab_results 2026-12-03 02:07"
    fake.context.flow_run.start_time = None
    now = datetime.now(UTC).astimezone()
    assert nightly.nightly_run_name().startswith(f"lab_results {now:%Y-%m-%d}")
    fake.context.parameters = {"feed": "no_such_feed"}
    fake.context.flow_run.start_time = due
    assert nightly.nightly_run_name() == "no_such_feed 2026-12-03 08:00 UTC"
