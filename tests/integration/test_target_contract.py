"""The target contract: what every target shows, run against each (SQLite, PostgreSQL, the
FHIR test server, outbound SFTP to a real sshd); then what the two SQL targets share.

What is particular to one target (SQLite's WAL and file bytes, PostgreSQL's SQLSTATEs and
retries, FHIR's bisection and tokens, SFTP's atomic rename and PGP) stays in its own file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import polars as pl
import pytest

from batchbridge.connectors.targets.base import LoadRequest, LoadResult
from batchbridge.errors import TargetError, TransientTargetError
from tests.integration.target_harness import (
    COLUMNS,
    KEY,
    SENSITIVE,
    TENANT,
    FhirHarness,
    Harness,
    PostgresHarness,
    SftpHarness,
    SqlHarness,
    SqliteHarness,
    corrected,
    lab_rows,
    request,
)

SQL_KINDS = [
    pytest.param("sqlite"),
    pytest.param("postgres", marks=pytest.mark.integration),
]
KINDS = [
    *SQL_KINDS,
    pytest.param("fhir", marks=pytest.mark.integration),
    pytest.param("sftp", marks=pytest.mark.integration),
]


def open_harness(kind: str, fixtures: pytest.FixtureRequest) -> Harness:
    """The harness of `kind`; a server fixture is started only for the kind that needs it."""
    if kind == "sqlite":
        return SqliteHarness(fixtures.getfixturevalue("tmp_path") / "var" / "warehouse.sqlite")
    if kind == "postgres":
        return PostgresHarness(fixtures.getfixturevalue("postgres_url"))
    if kind == "fhir":
        return FhirHarness(fixtures.getfixturevalue("fhir_server"))
    return SftpHarness(fixtures.getfixturevalue("sshd_server"))


@pytest.fixture(params=KINDS)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    opened = open_harness(request.param, request)
    yield opened
    opened.close()


@pytest.fixture(params=SQL_KINDS)
def sql(request: pytest.FixtureRequest) -> Iterator[SqlHarness]:
    opened = open_harness(request.param, request)
    assert isinstance(opened, SqlHarness)
    yield opened
    opened.close()


def counts(result: LoadResult) -> tuple[int, int, int]:
    return result.rows_inserted, result.rows_updated, result.rows_unchanged


def assert_balanced(result: LoadResult, sent: int) -> None:
    """Every row sent is counted once, and every row not rejected is confirmed."""
    changed = result.rows_inserted + result.rows_updated + result.rows_unchanged
    assert changed + result.rows_rejected == sent
    assert result.rows_confirmed == sent - result.rows_rejected


# -- every target ------------------------------------------------------------------------


def test_first_load_inserts_every_row(harness: Harness) -> None:
    result = harness.target.load(request(lab_rows(3)))

    assert counts(result) == (3, 0, 0)
    assert (result.rows_rejected, result.rows_confirmed) == (0, 3)
    assert (result.target, result.load_id) == (harness.name, "load-1")
    assert_balanced(result, 3)
    assert harness.visible() == {"R0001": "F", "R0002": "F", "R0003": "F"}


def test_an_identical_reload_changes_nothing(harness: Harness) -> None:
    rows = lab_rows(3)
    harness.target.load(request(rows))
    before = harness.snapshot()

    again = harness.target.load(request(rows, load_id="load-2"))

    assert counts(again) == (0, 0, 3)
    assert again.rows_confirmed == 3
    assert_balanced(again, 3)
    # Lineage included: what is stored still belongs to the load that wrote it.
    assert harness.snapshot() == before


def test_changed_rows_update(harness: Harness) -> None:
    rows = lab_rows(3)
    harness.target.load(request(rows))

    result = harness.target.load(request(corrected(rows, {"R0002"}), load_id="load-2"))

    # A file-level target replaces the whole file: every row of it is updated.
    updated = 1 if harness.row_level else 3
    assert counts(result) == (0, updated, 3 - updated)
    assert result.rows_confirmed == 3
    assert_balanced(result, 3)
    assert harness.visible() == {"R0001": "F", "R0002": "C", "R0003": "F"}


def test_new_and_changed_rows_in_one_load(harness: Harness) -> None:
    harness.target.load(request(lab_rows(2)))
    bigger = corrected(lab_rows(4), {"R0001"})

    result = harness.target.load(request(bigger, load_id="load-2"))

    assert counts(result) == ((2, 1, 1) if harness.row_level else (0, 4, 0))
    assert result.rows_confirmed == 4
    assert_balanced(result, 4)
    assert harness.visible() == {"R0001": "C", "R0002": "F", "R0003": "F", "R0004": "F"}


def test_an_empty_load_counts_nothing(harness: Harness) -> None:
    result = harness.target.load(request(lab_rows(0)))

    assert counts(result) == (0, 0, 0)
    assert (result.rows_rejected, result.rows_confirmed) == (0, 0)
    assert harness.visible() == {}


def test_columns_not_configured_never_reach_the_target(harness: Harness) -> None:
    harness.target.load(request(lab_rows(2)))

    assert SENSITIVE not in str(harness.snapshot())


def test_a_failing_load_leaves_nothing_visible_and_names_no_value(harness: Harness) -> None:
    harness.break_next_load()
    before = harness.snapshot()
    rows = lab_rows(5).with_columns(result_value=pl.lit(SENSITIVE))

    with pytest.raises(TargetError) as caught:
        harness.target.load(request(rows))

    assert SENSITIVE not in str(caught.value)
    assert caught.value.__cause__ is None
    # One transaction: the rows written before the failure are gone with it.
    assert harness.snapshot() == before
    assert harness.visible() == {}
    harness.repair()
    result = harness.target.load(request(rows, load_id="load-2"))
    assert counts(result) == (5, 0, 0)
    assert_balanced(result, 5)


def test_duplicate_keys_in_one_request_are_refused_without_the_key(harness: Harness) -> None:
    rows = pl.concat([lab_rows(2), lab_rows(1)])

    with pytest.raises(TargetError, match="2 rows share a natural key") as caught:
        harness.target.load(request(rows))

    assert "R0001" not in str(caught.value)
    assert "validation stage guarantees" in str(caught.value)
    assert harness.visible() == {}


def test_incomplete_requests_are_refused(harness: Harness) -> None:
    no_key = lab_rows(2).with_columns(record_id=pl.lit(None, dtype=pl.String))
    with pytest.raises(TargetError, match="2 rows have an empty natural key"):
        harness.target.load(request(no_key))
    with pytest.raises(TargetError, match=r"rows lack configured columns \['loinc_code'\]"):
        harness.target.load(request(lab_rows(1).drop("loinc_code")))
    assert harness.visible() == {}


# -- the SQL targets (one plan: sql_plan.py) -----------------------------------------------


def test_sql_first_load_records_lineage_per_tenant(sql: SqlHarness) -> None:
    sql.target.load(request(lab_rows(3)))

    assert sql.table.count_rows(TENANT) == 3
    assert sql.table.rows_for_load("load-1") == 3
    assert sql.table.count_rows("other_tenant") == 0


def test_sql_a_refused_request_leaves_no_row(sql: SqlHarness) -> None:
    with pytest.raises(TargetError, match="2 rows share a natural key"):
        sql.target.load(request(pl.concat([lab_rows(2), lab_rows(1)])))

    assert sql.table.count_rows(TENANT) == 0


def test_sql_same_request_again_keeps_the_lineage(sql: SqlHarness) -> None:
    rows = lab_rows(3)
    sql.target.load(request(rows))

    sql.target.load(request(rows, load_id="load-2"))

    assert sql.table.rows_for_load("load-1") == 3
    assert sql.table.rows_for_load("load-2") == 0


def test_sql_corrected_result_updates_only_that_row(sql: SqlHarness) -> None:
    rows = lab_rows(3)
    sql.target.load(request(rows))

    sql.target.load(request(corrected(rows, {"R0002"}), load_id="load-2", file_id="file-2"))

    assert sql.fetch(
        "SELECT record_id, result_status, result_value_numeric, load_id, file_id "
        "FROM lab_result ORDER BY record_id"
    ) == [
        ("R0001", "F", 90.25, "load-1", "file-1"),
        ("R0002", "C", 77.5, "load-2", "file-2"),
        ("R0003", "F", 92.25, "load-1", "file-1"),
    ]


def test_sql_a_value_becoming_null_is_a_change(sql: SqlHarness) -> None:
    rows = lab_rows(2)
    sql.target.load(request(rows))
    blanked = rows.with_columns(
        result_value_numeric=pl.when(pl.col("record_id") == "R0001")
        .then(pl.lit(None, dtype=pl.Float64))
        .otherwise(pl.col("result_value_numeric"))
    )

    result = sql.target.load(request(blanked, load_id="load-2"))

    assert (result.rows_updated, result.rows_unchanged) == (1, 1)


def test_sql_keys_are_counted_per_tenant(sql: SqlHarness) -> None:
    keys = lab_rows(4).select(KEY)
    assert sql.table.count_keys_present(TENANT, keys) == 0  # no table yet
    sql.target.load(request(lab_rows(4)))

    assert sql.table.count_keys_present(TENANT, keys) == 4
    assert sql.table.count_keys_present("other_tenant", keys) == 0


def test_sql_tenants_do_not_collide(sql: SqlHarness) -> None:
    rows = lab_rows(2)
    sql.target.load(request(rows))

    result = sql.target.load(request(rows, load_id="load-9", file_id="file-9", tenant="other_lab"))

    assert (result.rows_inserted, result.rows_confirmed) == (2, 2)
    assert sql.table.count_rows(TENANT) == sql.table.count_rows("other_lab") == 2


def test_sql_table_holds_key_columns_and_lineage_only(sql: SqlHarness) -> None:
    assert sql.table.table_columns() == []
    assert sql.table.count_rows(TENANT) == sql.table.rows_for_load("load-1") == 0

    sql.target.load(request(lab_rows(0)))  # an empty load creates the table

    assert sql.table.table_columns() == [
        "tenant",
        "record_id",
        *COLUMNS,
        "load_id",
        "file_id",
        "source_row",
        "loaded_at",
    ]


def test_sql_a_failing_load_keeps_the_previous_rows_and_lineage(sql: SqlHarness) -> None:
    sql.target.load(request(lab_rows(2)))
    sql.break_next_load()
    before = sql.snapshot()

    with pytest.raises(TargetError) as caught:
        sql.target.load(request(corrected(lab_rows(3), {"R0001"}), load_id="load-2"))

    assert not isinstance(caught.value, TransientTargetError)
    assert sql.snapshot() == before  # R0001 kept its value and its load


def test_sql_a_table_missing_a_configured_column_is_refused(sql: SqlHarness) -> None:
    sql.target.load(request(lab_rows(1)))
    wider = sql.reopen([*COLUMNS, "result_unit"])
    rows = lab_rows(1).with_columns(result_unit=pl.lit("mg/dL"))

    with wider, pytest.raises(TargetError, match=r"lacks columns \['result_unit'\]"):
        wider.load(request(rows))


def test_sql_health_canary_is_written_read_back_and_kept_per_tenant(sql: SqlHarness) -> None:
    first = sql.table.check_writable(TENANT)
    second = sql.table.check_writable(TENANT)
    sql.table.check_writable("other_lab")

    assert first <= second
    tenants = sql.fetch("SELECT tenant FROM batchbridge_health_canary ORDER BY tenant")
    assert tenants == [(TENANT,), ("other_lab",)]
    assert sql.table.table_columns() == []  # the loaded table is never touched


def test_sql_full_snapshots_inactivate_absent_records_and_keep_quarantined_ones(
    sql: SqlHarness,
) -> None:
    def snapshot(ids: list[int], load_id: str, kept: list[str] | None = None) -> LoadRequest:
        rows = lab_rows(4).filter(pl.col("record_id").is_in([f"R{i:04d}" for i in ids]))
        kept_keys = None if kept is None else pl.DataFrame({"record_id": kept})
        return replace(request(rows, load_id=load_id), full_snapshot=True, kept_keys=kept_keys)

    def states() -> list[tuple[object, ...]]:
        return sql.fetch(
            "SELECT record_id, active, inactivated_by_load FROM lab_result ORDER BY record_id"
        )

    assert sql.target.load(snapshot([1, 2, 3, 4], "L1")).rows_inactivated == 0
    second = sql.target.load(snapshot([1], "L2", kept=["R0002"]))  # R0002 quarantined
    again = sql.target.load(snapshot([1], "L3", kept=["R0002"]))
    active, inactive = (True, False) if sql.kind == "postgres" else (1, 0)
    assert (second.rows_unchanged, second.rows_inactivated) == (1, 2)
    assert (again.rows_unchanged, again.rows_inactivated) == (1, 0)
    assert states() == [
        ("R0001", active, None),
        ("R0002", active, None),
        ("R0003", inactive, "L2"),
        ("R0004", inactive, "L2"),
    ]
    back = sql.target.load(snapshot([1, 3], "L4"))
    assert (back.rows_updated, back.rows_unchanged, back.rows_inactivated) == (1, 1, 1)
    assert states()[2] == ("R0003", active, None)
