"""PostgresTarget against a real PostgreSQL: types, CSV quoting, SQLSTATE errors, retries.

What PostgreSQL shares with every target, and with SQLite, is proven by
test_target_contract.py.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, LiteralString

import polars as pl
import psycopg
import pytest

from batchbridge.connectors.targets.base import LoadRequest
from batchbridge.connectors.targets.postgres import PostgresTarget
from batchbridge.errors import TargetError, TransientTargetError
from batchbridge.validations.base import ROW_COLUMN
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

COLUMNS = [
    "patient_key",
    "loinc_code",
    "result_value",
    "result_value_numeric",
    "result_status",
    "resulted_at",
]
KEY = ("record_id",)
# Never configured for the target: must never reach it (data minimization).
SENSITIVE = "SECRET-DOE-JANE"


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
        schema={
            "record_id": pl.String,
            "patient_key": pl.String,
            "loinc_code": pl.String,
            "result_value": pl.String,
            "result_value_numeric": pl.Float64,
            "result_status": pl.String,
            "resulted_at": pl.Datetime("us", "UTC"),
            "patient_first_name": pl.String,
            ROW_COLUMN: pl.UInt32,
        },
    )


def request(rows: pl.DataFrame, load_id: str = "load-1", file_id: str = "file-1") -> LoadRequest:
    return LoadRequest(
        tenant="acme_lab", natural_key=KEY, load_id=load_id, file_id=file_id, rows=rows
    )


def fast_target(url: str) -> PostgresTarget:
    """A target whose retries wait milliseconds, not seconds (tests stay quick)."""
    return PostgresTarget(
        "warehouse",
        url,
        "lab_result",
        "public",
        COLUMNS,
        max_attempts=3,
        retry_initial_wait=0.01,
        retry_max_wait=0.05,
    )


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def target(postgres_url: str) -> Iterator[PostgresTarget]:
    with fast_target(postgres_url) as t:
        yield t


def fetch(url: str, query: LiteralString) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(url)) as conn:
        return conn.execute(query).fetchall()


def test_datetimes_and_floats_round_trip(target: PostgresTarget, postgres_url: str) -> None:
    chicago = timezone(timedelta(hours=-6))
    rows = lab_rows(2).with_columns(
        result_value_numeric=pl.Series([0.1 + 0.2, 1e-300]),
        # A non-UTC zone is stored as the same instant.
        resulted_at=pl.Series(
            [
                datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC),
                datetime(2026, 3, 1, 18, 0, tzinfo=chicago),
            ]
        ).dt.convert_time_zone("America/Chicago"),
    )

    target.load(request(rows))

    stored = fetch(
        postgres_url,
        "SELECT resulted_at, result_value_numeric, source_row FROM lab_result ORDER BY record_id",
    )
    assert stored == [
        (datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC), 0.1 + 0.2, 1),
        (datetime(2026, 3, 2, 0, 0, tzinfo=UTC), 1e-300, 2),
    ]
    types = fetch(
        postgres_url,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'lab_result' ORDER BY ordinal_position",
    )
    declared = {name: kind for name, kind in types}
    assert declared["resulted_at"] == "timestamp with time zone"
    assert declared["result_value_numeric"] == "double precision"
    assert declared["source_row"] == "integer"


def test_strings_survive_csv_quoting(target: PostgresTarget, postgres_url: str) -> None:
    tricky = ['a,"b"\nc', "", None]
    rows = lab_rows(3).with_columns(result_value=pl.Series(tricky, dtype=pl.String))

    target.load(request(rows))

    stored = fetch(postgres_url, "SELECT result_value FROM lab_result ORDER BY record_id")
    assert [value for (value,) in stored] == tricky


def test_constraint_violation_names_table_and_sqlstate_but_no_value(
    target: PostgresTarget, postgres_url: str
) -> None:
    target.load(request(lab_rows(1)))
    with psycopg.connect(libpq(postgres_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE lab_result ALTER COLUMN loinc_code SET NOT NULL")
    rows = lab_rows(2).with_columns(
        loinc_code=pl.lit(None, dtype=pl.String), result_value=pl.lit(SENSITIVE)
    )

    with pytest.raises(TargetError) as caught:
        target.load(request(rows, load_id="load-2"))

    message = str(caught.value)
    assert not isinstance(caught.value, TransientTargetError)
    assert "public.lab_result" in message
    assert "SQLSTATE 23502" in message
    assert "column loinc_code" in message
    # PostgreSQL's DETAIL ("Failing row contains (...)") must not leak, not even chained.
    assert SENSITIVE not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    # The whole load rolled back, and the target still works afterwards.
    assert target.count_rows("acme_lab") == 1
    assert target.load(request(lab_rows(1), load_id="load-3")).rows_unchanged == 1


def test_table_without_the_natural_key_constraint_is_refused(postgres_url: str) -> None:
    with psycopg.connect(libpq(postgres_url), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE lab_result (tenant text, record_id text, patient_key text, "
            "loinc_code text, result_value text, result_value_numeric double precision, "
            "result_status text, resulted_at timestamptz, load_id text, file_id text, "
            "source_row integer, loaded_at timestamptz)"
        )
    with fast_target(postgres_url) as t, pytest.raises(TargetError, match="SQLSTATE 42P10"):
        t.load(request(lab_rows(1)))


def test_other_schema_and_plain_libpq_url(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("plain_dsn")
    try:
        dsn = postgres_server.dsn_for("plain_dsn")
        assert not dsn.startswith("postgresql+")
        with PostgresTarget("w", dsn, "lab_result", "warehouse", COLUMNS) as t:
            assert t.load(request(lab_rows(2))).rows_confirmed == 2
        assert fetch(url, "SELECT count(*) FROM warehouse.lab_result") == [(2,)]
    finally:
        postgres_server.drop_database("plain_dsn")


def test_connection_killed_between_loads_is_retried(
    target: PostgresTarget, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    target.load(request(lab_rows(1)))
    with psycopg.connect(libpq(postgres_url), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'batchbridge'"
        ).fetchall()
    assert killed == [(True,)]

    with caplog.at_level(logging.WARNING):
        result = target.load(request(lab_rows(3), load_id="load-2"))

    assert (result.rows_inserted, result.rows_unchanged, result.rows_confirmed) == (2, 1, 3)
    assert "attempt 1 of 3" in caplog.text


def test_server_restart_between_loads_is_retried(
    target: PostgresTarget, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    target.load(request(lab_rows(1)))
    postgres_server.restart()

    with caplog.at_level(logging.WARNING):
        result = target.load(request(lab_rows(2), load_id="load-2"))

    assert (result.rows_inserted, result.rows_unchanged, result.rows_confirmed) == (1, 1, 2)
    assert "attempt 1 of 3" in caplog.text


def test_connection_killed_during_a_load_is_retried(
    target: PostgresTarget, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    target.load(request(lab_rows(1)))
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["result"] = target.load(request(lab_rows(3), load_id="load-2"))
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    with psycopg.connect(libpq(postgres_url)) as blocker:
        # Hold the table so the load stops mid-transaction, waiting on the lock.
        blocker.execute("LOCK TABLE lab_result IN ACCESS EXCLUSIVE MODE")
        with caplog.at_level(logging.WARNING):
            loader = threading.Thread(target=load)
            loader.start()
            with psycopg.connect(libpq(postgres_url), autocommit=True) as admin:
                waiting: list[tuple[Any, ...]] = []
                deadline = time.monotonic() + 10
                while not waiting and time.monotonic() < deadline:
                    waiting = admin.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name = 'batchbridge' AND wait_event_type = 'Lock'"
                    ).fetchall()
                    time.sleep(0.02)
                assert waiting, "the load never blocked on the table lock"
                admin.execute("SELECT pg_terminate_backend(%s)", waiting[0])
            blocker.rollback()
            loader.join(timeout=30)

    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.rows_inserted == 2
    assert result.rows_confirmed == 3
    assert "attempt 1 of 3" in caplog.text


def test_unreachable_server_gives_transient_error_after_max_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{closed_port}/warehouse"

    with (
        caplog.at_level(logging.WARNING),
        fast_target(url) as t,
        pytest.raises(TransientTargetError, match="gave up after 3 attempts") as caught,
    ):
        t.load(request(lab_rows(1)))

    assert "Connection refused" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(t)
    assert caplog.text.count("retrying in") == 2


def test_refused_login_is_not_retried(
    postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres_server.url_for("no_such_database")
    with (
        caplog.at_level(logging.WARNING),
        fast_target(url) as t,
        pytest.raises(TargetError, match="does not exist") as caught,
    ):
        t.load(request(lab_rows(1)))

    assert not isinstance(caught.value, TransientTargetError)
    assert "retrying" not in caplog.text
