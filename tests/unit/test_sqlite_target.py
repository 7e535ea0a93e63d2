"""SqliteTarget specifics (WAL, the file, types, locks) and the target registry.

What SQLite shares with every target, and with PostgreSQL, is proven by
tests/integration/test_target_contract.py.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest

from batchbridge.config import FeedConfig, LoadedFeed
from batchbridge.connectors.targets.base import LoadRequest
from batchbridge.connectors.targets.postgres import PostgresTarget
from batchbridge.connectors.targets.registry import TARGET_KINDS, open_target
from batchbridge.connectors.targets.sqlite import SqliteTarget
from batchbridge.errors import ConfigError, SecretNotFoundError, TargetError, TransientTargetError
from batchbridge.validations.base import ROW_COLUMN

COLUMNS = [
    "patient_key",
    "loinc_code",
    "result_value",
    "result_value_numeric",
    "result_status",
    "resulted_at",
]
KEY = ("record_id",)
SENSITIVE = "SECRET-DOE-JANE"
SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String(),
    "patient_key": pl.String(),
    "loinc_code": pl.String(),
    "result_value": pl.String(),
    "result_value_numeric": pl.Float64(),
    "result_status": pl.String(),
    "resulted_at": pl.Datetime("us", "UTC"),
    "patient_first_name": pl.String(),
    ROW_COLUMN: pl.UInt32(),
}


def lab_rows(n: int = 3) -> pl.DataFrame:
    """Rows shaped like the transformed lab_results output, plus a column not configured."""
    base = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
    return pl.DataFrame(
        {
            "record_id": [f"R{i:04d}" for i in range(1, n + 1)],
            "patient_key": [f"pk{i:062d}" for i in range(1, n + 1)],
            "loinc_code": ["2345-7"] * n,
            "result_value": [f"{90 + i}" for i in range(n)],
            "result_value_numeric": [90.0 + i + 0.25 for i in range(n)],
            "result_status": ["F"] * n,
            "resulted_at": [base + timedelta(minutes=i) for i in range(n)],
            "patient_first_name": [SENSITIVE] * n,
            ROW_COLUMN: list(range(1, n + 1)),
        },
        schema=SCHEMA,
    )


def request(rows: pl.DataFrame, load_id: str = "load-1", file_id: str = "file-1") -> LoadRequest:
    return LoadRequest(
        tenant="acme_lab", natural_key=KEY, load_id=load_id, file_id=file_id, rows=rows
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "warehouse.sqlite"


@pytest.fixture
def target(db_path: Path) -> Any:
    with SqliteTarget("warehouse", db_path, "lab_result", COLUMNS) as t:
        yield t


def fetch(path: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def test_the_database_file_is_in_wal_mode(target: SqliteTarget, db_path: Path) -> None:
    target.load(request(lab_rows(3)))

    assert fetch(db_path, "PRAGMA journal_mode") == [("wal",)]


def test_columns_not_configured_never_reach_the_file(target: SqliteTarget, db_path: Path) -> None:
    target.load(request(lab_rows(2)))

    assert SENSITIVE.encode() not in db_path.read_bytes()
    wal = db_path.with_name(db_path.name + "-wal")
    assert not wal.exists() or SENSITIVE.encode() not in wal.read_bytes()


def test_utc_datetimes_are_iso_text_and_round_trip(target: SqliteTarget, db_path: Path) -> None:
    instant = datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)
    rows = lab_rows(1).with_columns(
        resulted_at=pl.Series([instant]).dt.convert_time_zone("America/Chicago"),
        result_value_numeric=pl.Series([0.1 + 0.2]),
    )

    target.load(request(rows))

    [(text, number, row)] = fetch(
        db_path, "SELECT resulted_at, result_value_numeric, source_row FROM lab_result"
    )
    assert text == "2026-03-01T23:59:59.999999+00:00"
    assert datetime.fromisoformat(text) == instant
    assert (number, row) == (0.1 + 0.2, 1)
    back = pl.Series([text]).str.to_datetime(time_unit="us", time_zone="UTC")
    assert back.dtype == pl.Datetime("us", "UTC")
    assert back.to_list() == [instant]


def test_naive_datetimes_are_refused(target: SqliteTarget) -> None:
    rows = lab_rows(1).with_columns(pl.col("resulted_at").dt.replace_time_zone(None))

    with pytest.raises(TargetError, match="naive Datetime"):
        target.load(request(rows))


def test_constraint_violation_rolls_back_and_hides_values(
    target: SqliteTarget, db_path: Path
) -> None:
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute(
        "CREATE TABLE lab_result (tenant TEXT NOT NULL, record_id TEXT NOT NULL, "
        "patient_key TEXT, loinc_code TEXT NOT NULL, result_value TEXT, "
        "result_value_numeric REAL, result_status TEXT, resulted_at TEXT, "
        "load_id TEXT NOT NULL, file_id TEXT NOT NULL, source_row INTEGER NOT NULL, "
        "loaded_at TEXT NOT NULL, PRIMARY KEY (tenant, record_id))"
    )
    conn.close()
    rows = lab_rows(2).with_columns(
        loinc_code=pl.when(pl.col("record_id") == "R0002")
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.col("loinc_code")),
        result_value=pl.lit(SENSITIVE),
    )

    with pytest.raises(TargetError) as caught:
        target.load(request(rows))

    message = str(caught.value)
    assert not isinstance(caught.value, TransientTargetError)
    assert "SQLITE_CONSTRAINT_NOTNULL" in message
    assert "lab_result" in message
    assert SENSITIVE not in message
    assert caught.value.__cause__ is None
    # One transaction: the valid first row was not kept either.
    assert target.count_rows("acme_lab") == 0
    assert target.load(request(lab_rows(1))).rows_inserted == 1


def test_locked_database_is_transient(db_path: Path) -> None:
    with SqliteTarget("warehouse", db_path, "lab_result", COLUMNS) as t:
        t.load(request(lab_rows(1)))
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with (
            SqliteTarget("warehouse", db_path, "lab_result", COLUMNS, timeout=0.05) as t,
            pytest.raises(TransientTargetError, match="SQLITE_BUSY"),
        ):
            t.load(request(lab_rows(2), load_id="load-2"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_reserved_column_names_are_a_config_error(db_path: Path) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        SqliteTarget("warehouse", db_path, "lab_result", [*COLUMNS, "load_id"])


# -- registry ---------------------------------------------------------------------------


def loaded_feed(tmp_path: Path, targets: list[dict[str, Any]]) -> LoadedFeed:
    config = FeedConfig.model_validate(
        {
            "feed": "lab_results",
            "tenant": "acme_lab",
            "schema": "lab_results",
            "source": {"kind": "local", "path": "inbox", "glob": "*.pgp"},
            "pgp": {"private_key": "env:PGP_KEY", "partner_public_keys": ["env:PARTNER"]},
            "pseudonym_key": "env:PSEUDONYM_KEY",
            "quarantine_key": "env:QUARANTINE_KEY",
            "targets": targets,
        }
    )
    return LoadedFeed(config=config, path=tmp_path / "feeds" / "lab_results.yaml")


def test_registry_opens_sqlite_relative_to_the_feed_file(tmp_path: Path) -> None:
    feed = loaded_feed(
        tmp_path,
        [
            {
                "name": "demo",
                "kind": "sqlite",
                "path": "../var/demo.sqlite",
                "table": "lab_result",
                "columns": COLUMNS,
            }
        ],
    )

    target = open_target(feed, feed.config.targets[0])

    assert isinstance(target, SqliteTarget)
    assert target.path == (tmp_path / "var" / "demo.sqlite").resolve()
    with target:
        assert target.load(request(lab_rows(1))).rows_confirmed == 1


def test_registry_resolves_the_postgres_url_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = loaded_feed(
        tmp_path,
        [
            {
                "name": "warehouse",
                "kind": "postgres",
                "url": "env:WAREHOUSE_URL",
                "table": "lab_result",
                "db_schema": "lab",
                "columns": COLUMNS,
                "max_attempts": 2,
            }
        ],
    )
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql+psycopg://loader:s3cret@db.invalid/dw")

    target = open_target(feed, feed.config.targets[0])

    assert isinstance(target, PostgresTarget)
    assert (target.db_schema, target.table, target.max_attempts) == ("lab", "lab_result", 2)
    assert "s3cret" not in repr(target)
    assert "s3cret" not in repr(vars(target))


def test_registry_reports_a_missing_url_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    feed = loaded_feed(
        tmp_path,
        [
            {
                "name": "warehouse",
                "kind": "postgres",
                "url": "env:WAREHOUSE_URL",
                "table": "lab_result",
                "columns": COLUMNS,
            }
        ],
    )

    with pytest.raises(SecretNotFoundError, match="env:WAREHOUSE_URL"):
        open_target(feed, feed.config.targets[0])


def test_registry_names_the_valid_kinds_for_an_unknown_one(tmp_path: Path) -> None:
    feed = loaded_feed(
        tmp_path,
        [{"name": "demo", "kind": "sqlite", "path": "x.sqlite", "table": "t", "columns": ["a"]}],
    )
    bogus = SimpleNamespace(kind="ftp", name="outbound")

    with pytest.raises(ConfigError, match="unknown kind 'ftp' \\(fhir, postgres, sftp, sqlite\\)"):
        open_target(feed, bogus)  # type: ignore[arg-type]
    assert set(TARGET_KINDS) == {"fhir", "postgres", "sftp", "sqlite"}


def test_a_url_that_is_not_postgres_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError, match="not a PostgreSQL connection URL") as caught:
        PostgresTarget("warehouse", "mysql://loader:s3cret@db/dw", "lab_result", "public", ["a"])

    assert "s3cret" not in str(caught.value)
