"""End to end: gpg-made files on a real sshd, through the Prefect flow, into real PostgreSQL."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from batchbridge.demo.gpg import flip_bit
from batchbridge.demo.lab_data import expected_quarantined, generate_lab_rows, render_lab_csv
from batchbridge.demo.scenario import (
    LabFeedScenario,
    lab_file_name,
)
from tests.integration.flow_helpers import run_flow, target_rows, without_lineage
from tests.support.sshd import SshdServer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

FILE_DATE = date(2026, 11, 20)
BAD_ROWS = {"bad_npi": 2, "unmapped_code": 2, "bad_dob": 1, "duplicate_id": 1}


def _rows(n: int = 40, **kwargs: object) -> pl.DataFrame:
    return generate_lab_rows(n, seed=11, file_date=FILE_DATE, **kwargs)  # type: ignore[arg-type]


def test_good_file_loads_and_balances(scenario: LabFeedScenario, postgres_url: str) -> None:
    frame = _rows(60, bad_rows=BAD_ROWS)
    name = lab_file_name(FILE_DATE)
    scenario.drop_file(name, frame)

    report = run_flow(scenario)

    assert report.status == "succeeded", report.to_dict()
    (file_report,) = report.files
    quarantined = expected_quarantined(BAD_ROWS)
    assert file_report.outcome == "reconciled" and file_report.balanced
    assert file_report.rows_read == 60 == file_report.rows_declared
    assert file_report.rows_quarantined == quarantined
    assert file_report.rows_valid == 60 - quarantined
    assert file_report.quarantine_reasons["local_test_code:unmapped_code"] == 2
    assert file_report.targets["warehouse"].inserted == 60 - quarantined
    rows = target_rows(postgres_url)
    assert len(rows) == 60 - quarantined
    first = next(iter(rows.values()))
    assert "patient_last_name" not in first and "patient_mrn" not in first  # minimization
    assert len(first["patient_key"]) == 64


def test_same_file_twice_leaves_target_unchanged(
    scenario: LabFeedScenario, postgres_url: str
) -> None:
    scenario.drop_file(lab_file_name(FILE_DATE), _rows(30))
    assert run_flow(scenario).status == "succeeded"
    before = target_rows(postgres_url)

    again = run_flow(scenario)
    assert again.files == [] and list(again.skipped.values()) == ["already_done"]

    forced = run_flow(scenario, force=True)
    (file_report,) = forced.files
    assert file_report.is_rerun and file_report.outcome == "reconciled"
    counts = file_report.targets["warehouse"]
    assert (counts.inserted, counts.updated, counts.unchanged) == (0, 0, 30)
    assert target_rows(postgres_url) == before


def test_corrected_row_updates_its_row(scenario: LabFeedScenario, postgres_url: str) -> None:
    frame = _rows(20)
    scenario.drop_file(lab_file_name(FILE_DATE), frame)
    assert run_flow(scenario).status == "succeeded"
    before = target_rows(postgres_url)

    corrected = frame.head(1).with_columns(
        pl.lit("C").alias("result_status"), pl.lit("corrected").alias("reference_range")
    )
    scenario.drop_file(lab_file_name(FILE_DATE, seq=2), corrected)
    report = run_flow(scenario)

    (file_report,) = report.files
    assert file_report.targets["warehouse"].updated == 1
    after = target_rows(postgres_url)
    record_id = corrected["record_id"][0]
    assert after[record_id]["result_status"] == "C"
    assert after[record_id]["reference_range"] == "corrected"
    others = {k: v for k, v in after.items() if k != record_id}
    assert without_lineage(others) == without_lineage(
        {k: v for k, v in before.items() if k != record_id}
    )


def _drop_truncated(scenario: LabFeedScenario, name: str) -> None:
    data = render_lab_csv(_rows(10))
    lines = data.splitlines(keepends=True)
    # The last data row is lost; the trailer still says 10.
    scenario.drop_file(name, b"".join(lines[:-2] + lines[-1:]))


def _drop_other_signer(scenario: LabFeedScenario, name: str) -> None:
    stranger = scenario.partner.generate_key("Stranger", "stranger@example.org")
    scenario.drop_file(name, _rows(10), signer_fpr=stranger)


def _drop_unsigned(scenario: LabFeedScenario, name: str) -> None:
    scenario.drop_file(name, _rows(10), signer_fpr=None)


def _drop_tampered(scenario: LabFeedScenario, name: str) -> None:
    path = scenario.drop_file(f"tmp-{name}", _rows(10))
    flip_bit(path, scenario.endpoint.drop_dir / name)
    path.unlink()


def _drop_schema_drift(scenario: LabFeedScenario, name: str) -> None:
    scenario.drop_file(name, _rows(10).drop("patient_zip").with_columns(pl.lit("x").alias("extra")))


@pytest.mark.parametrize(
    ("make_file", "stage", "reason"),
    [
        (_drop_truncated, "validate", "trailer_mismatch"),
        (_drop_other_signer, "decrypt", "wrong_signer"),
        (_drop_unsigned, "decrypt", "unsigned"),
        (_drop_tampered, "decrypt", None),
        (_drop_schema_drift, "validate", "schema_drift"),
    ],
    ids=["truncated", "other-signer", "unsigned", "tampered", "schema-drift"],
)
def test_broken_file_fails_whole_and_loads_nothing(
    scenario: LabFeedScenario,
    postgres_url: str,
    make_file: object,
    stage: str,
    reason: str | None,
) -> None:
    name = lab_file_name(FILE_DATE)
    make_file(scenario, name)  # type: ignore[operator]

    report = run_flow(scenario)

    assert report.status == "failed"
    (file_report,) = report.files
    assert file_report.outcome == "failed"
    assert file_report.failed_stage == stage
    if reason is not None:
        assert file_report.reason == reason
    assert file_report.message
    assert target_rows(postgres_url) == {}


def test_one_failing_file_does_not_stop_the_others(
    scenario: LabFeedScenario, postgres_url: str
) -> None:
    _drop_unsigned(scenario, lab_file_name(FILE_DATE, seq=1))
    scenario.drop_file(lab_file_name(FILE_DATE, seq=2), _rows(15))

    report = run_flow(scenario)

    assert report.status == "failed"
    outcomes = {f.name: f.outcome for f in report.files}
    assert outcomes == {
        lab_file_name(FILE_DATE, seq=1): "failed",
        lab_file_name(FILE_DATE, seq=2): "reconciled",
    }
    assert len(target_rows(postgres_url)) == 15


def test_files_in_parallel_each_balance_and_keep_the_discovery_order(
    scenario: LabFeedScenario, postgres_url: str
) -> None:
    feed_yaml = scenario.feed_path
    feed_yaml.write_text(feed_yaml.read_text() + "parallel_files: 3\n")
    names = [lab_file_name(FILE_DATE, seq=seq) for seq in range(1, 6)]
    _drop_unsigned(scenario, names[1])
    for seq, name in enumerate(names, start=1):
        if name != names[1]:
            rows = generate_lab_rows(12, seed=seq, file_date=FILE_DATE)
            ids = pl.format("S{}-{}", pl.lit(seq), pl.col("record_id")).alias("record_id")
            scenario.drop_file(name, rows.with_columns(ids))

    report = run_flow(scenario)

    assert [f.name for f in report.files] == names
    assert [f.outcome for f in report.files] == ["reconciled", "failed"] + ["reconciled"] * 3
    assert all(f.balanced for f in report.files if f.outcome == "reconciled")
    loaded = target_rows(postgres_url)
    assert len(loaded) == 4 * 12
    again = run_flow(scenario, force=True)
    assert sum(f.targets["warehouse"].unchanged for f in again.files if f.targets) == 48
    assert target_rows(postgres_url) == loaded


def test_file_still_being_written_is_not_picked_up(
    scenario: LabFeedScenario, postgres_url: str
) -> None:
    text = scenario.feed_path.read_text(encoding="utf-8")
    scenario.feed_path.write_text(
        text.replace("min_age_seconds: 0.0", "min_age_seconds: 3600"), encoding="utf-8"
    )
    scenario.drop_file(lab_file_name(FILE_DATE), _rows(5))

    report = run_flow(scenario)

    assert report.status == "succeeded"
    assert report.files == []
    assert target_rows(postgres_url) == {}


# Last in the module: it rotates the module's sshd host key.
def test_changed_host_key_refuses_to_connect(
    scenario: LabFeedScenario, sshd_server: SshdServer, postgres_url: str
) -> None:
    scenario.drop_file(lab_file_name(FILE_DATE), _rows(5))
    sshd_server.rotate_host_key()

    report = run_flow(scenario)

    assert report.status == "failed"
    assert report.error is not None and report.error["reason"] == "host_key_mismatch"
    assert target_rows(postgres_url) == {}
