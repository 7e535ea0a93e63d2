"""Rows COPYed into PostgreSQL while the file streams (targets.early_stage), on a real server.

The early stage may only make a load faster: every test here ends with what the
ordinary load would have left, whether the stage was used, broken or abandoned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import polars as pl
import psycopg
import pytest

from batchbridge.config import FormatConfig
from batchbridge.connectors.targets.early_stage import EarlyStage
from batchbridge.connectors.targets.loading import (
    TargetLoad,
    load_into_targets,
    open_early_stages,
)
from batchbridge.connectors.targets.postgres import PostgresTarget
from batchbridge.connectors.targets.postgres_early import MergeScope
from batchbridge.demo.lab_data import generate_lab_rows, mapping_frame, render_lab_csv
from batchbridge.demo.scenario import LAB_TARGET_COLUMNS
from batchbridge.errors import TargetError
from batchbridge.validations.base import TransformContext, ValidationContext
from batchbridge.validations.schemas.lab_results import LAB_RESULTS
from batchbridge.validations.stream import stream_file
from batchbridge.validations.transformed_rows import TransformedRows
from tests.integration.test_postgres_target import (
    COLUMNS,
    KEY,
    fast_target,
    fetch,
    lab_rows,
    libpq,
)
from tests.support.plaintext_source import BytesPlaintext

FILE_DATE = date(2026, 3, 1)
MAPPINGS = {"local_test_code": mapping_frame()}
VCTX = ValidationContext("acme_lab", FILE_DATE, "America/Chicago", MAPPINGS)
TCTX = TransformContext("acme_lab", "America/Chicago", MAPPINGS, b"k" * 32)


def transform_lab(valid: pl.DataFrame) -> pl.DataFrame:
    return LAB_RESULTS.transform(valid, TCTX)


pytestmark = pytest.mark.integration

FELL_BACK = "falling back to the ordinary load"
MERGE = MergeScope("acme_lab", "file-1")


@pytest.fixture(params=["stage only", "upsert as it goes"])
def scope(request: pytest.FixtureRequest) -> MergeScope | None:
    """Both kinds of early stage: COPY only, or COPY and upsert each chunk as it comes."""
    return None if request.param == "stage only" else MERGE


@pytest.fixture
def target(postgres_url: str) -> Iterator[PostgresTarget]:
    with fast_target(postgres_url) as t:
        yield t


def streamed(
    target: PostgresTarget, frame: pl.DataFrame, scope: MergeScope | None, *, chunk: int = 4
) -> TransformedRows:
    """`frame` offered chunk by chunk, as the stream does, to a fresh early stage."""
    stages = open_early_stages([(target, COLUMNS)], natural_key=KEY, scope=scope)
    rows = TransformedRows(KEY[0], frame.clear(), sinks=list(stages.values()))
    for offset in range(0, frame.height, chunk):
        rows.append(frame.slice(offset, chunk))
    return rows


def load(target: PostgresTarget, rows: TransformedRows) -> TargetLoad:
    staged = {sink.target: sink for sink in rows.sinks if isinstance(sink, EarlyStage)}
    try:
        [done] = load_into_targets(
            [(target, COLUMNS)],
            tenant="acme_lab",
            natural_key=KEY,
            file_id="file-1",
            rows=rows,
            on_loaded=lambda _: None,
            staged=staged,
        )
    finally:
        rows.close()
    return done


def table_exists(url: str) -> bool:
    return fetch(url, "SELECT to_regclass('public.lab_result') IS NOT NULL")[0][0] is True


def rows_visible(url: str) -> int:
    """Rows anyone else can see (an upserting stage makes the table, empty, up front)."""
    return fetch(url, "SELECT count(*) FROM lab_result")[0][0] if table_exists(url) else 0


def stage_backends(url: str) -> list[tuple[Any, ...]]:
    return fetch(
        url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'batchbridge' AND state <> 'idle'",
    )


def kill_stage_connection(url: str) -> None:
    """Terminate the early stage's backend (waits for it to connect)."""
    deadline = time.monotonic() + 10
    while not (backends := stage_backends(url)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backends, "the early stage never connected"
    with psycopg.connect(libpq(url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", backends[0])


def test_staged_rows_load_like_the_ordinary_path(
    target: PostgresTarget,
    postgres_url: str,
    scope: MergeScope | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    frame = lab_rows(10)
    with caplog.at_level(logging.INFO):
        rows = streamed(target, frame, scope)
        time.sleep(0.2)
        # Staged (and upserted) in an open transaction: nothing visible outside it yet.
        assert rows_visible(postgres_url) == 0
        first = load(target, rows)
        again = load(target, streamed(target, frame, scope))
    assert FELL_BACK not in caplog.text
    assert (first.result.rows_inserted, first.result.rows_confirmed) == (10, 10)
    assert (again.result.rows_unchanged, again.result.rows_confirmed) == (10, 10)
    loaded = fetch(postgres_url, "SELECT record_id, load_id, source_row FROM lab_result")
    assert sorted(loaded) == [(f"R{i:04d}", first.result.load_id, i) for i in range(1, 11)]
    # The ordinary path (no stage) finds every row as the staged load left it.
    plain = TransformedRows(KEY[0], frame.clear())
    plain.append(frame)
    ordinary = load(target, plain)
    assert (ordinary.result.rows_unchanged, ordinary.result.rows_updated) == (10, 0)
    types = fetch(
        postgres_url,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'lab_result' ORDER BY ordinal_position",
    )
    assert ("resulted_at", "timestamp with time zone") in types
    assert ("result_value_numeric", "double precision") in types
    assert not stage_backends(postgres_url)


def test_keys_dropped_at_the_end_are_never_loaded(
    target: PostgresTarget,
    postgres_url: str,
    scope: MergeScope | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = streamed(target, lab_rows(10), scope)
    rows.drop_keys(["R0002", "R0007"], rows=2)
    with caplog.at_level(logging.INFO):
        done = load(target, rows)
    assert FELL_BACK not in caplog.text
    assert (done.rows_sent, done.result.rows_inserted, done.result.rows_confirmed) == (8, 8, 8)
    ids = {row[0] for row in fetch(postgres_url, "SELECT record_id FROM lab_result")}
    assert ids == {f"R{i:04d}" for i in range(1, 11)} - {"R0002", "R0007"}


def test_a_stage_whose_connection_dies_falls_back_to_the_ordinary_load(
    target: PostgresTarget,
    postgres_url: str,
    scope: MergeScope | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = streamed(target, lab_rows(10), scope)
    kill_stage_connection(postgres_url)
    with caplog.at_level(logging.INFO):
        done = load(target, rows)
    assert FELL_BACK in caplog.text
    assert (done.result.rows_inserted, done.result.rows_confirmed) == (10, 10)
    assert fetch(postgres_url, "SELECT count(*) FROM lab_result") == [(10,)]


def test_an_abandoned_stage_leaves_nothing_behind(
    target: PostgresTarget, postgres_url: str, scope: MergeScope | None
) -> None:
    rows = streamed(target, lab_rows(10), scope)
    time.sleep(0.2)
    rows.close()  # the file failed after its rows were staged (a trailer mismatch, say)
    assert rows_visible(postgres_url) == 0
    assert not stage_backends(postgres_url)


def test_keys_repeated_across_chunks_are_refused_by_the_ordinary_path(
    target: PostgresTarget,
    postgres_url: str,
    scope: MergeScope | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    frame = lab_rows(6)
    repeated = pl.concat([frame, frame.slice(1, 1)])  # R0002 again, in a later chunk
    with caplog.at_level(logging.INFO), pytest.raises(TargetError, match="share a natural key"):
        load(target, streamed(target, repeated, scope, chunk=3))
    assert "keys repeat across chunks" in caplog.text
    assert rows_visible(postgres_url) == 0


def test_a_failed_stage_loads_rows_made_again_from_the_file(
    target: PostgresTarget, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows = generate_lab_rows(400, seed=4, file_date=FILE_DATE, bad_rows={"duplicate_id": 2})
    source = BytesPlaintext(render_lab_csv(rows), block=1000)
    stages = open_early_stages([(target, LAB_TARGET_COLUMNS)], natural_key=KEY, scope=MERGE)
    streamed = stream_file(
        source.open, FormatConfig(), LAB_RESULTS, VCTX, transform_lab,
        chunk_bytes=4000, sinks=list(stages.values()), replay=True,
    )  # fmt: skip
    kill_stage_connection(postgres_url)
    with caplog.at_level(logging.INFO):
        [done] = load_into_targets(
            [(target, LAB_TARGET_COLUMNS)], tenant="acme_lab", natural_key=KEY,
            file_id="file-1", rows=streamed.transformed, on_loaded=lambda _: None,
            staged=stages,
        )  # fmt: skip
    streamed.transformed.close()
    assert FELL_BACK in caplog.text
    assert source.opened == 3  # the stream, its second read for the repeated ids, the replay
    valid = streamed.rows_valid
    assert (done.rows_sent, done.result.rows_inserted, done.result.rows_confirmed) == (
        valid,
        valid,
        valid,
    )
    assert fetch(postgres_url, "SELECT count(*) FROM lab_result") == [(valid,)]


def test_upserted_rows_of_keys_dropped_at_the_end_are_taken_back(
    target: PostgresTarget, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = lab_rows(10)
    plain = TransformedRows(KEY[0], before.clear())
    plain.append(before)
    first = load(target, plain)
    snapshot = "SELECT record_id, result_value, load_id, source_row FROM lab_result"
    loaded = sorted(fetch(postgres_url, snapshot))
    # The next file: R0002 and R0005 corrected, R0011 and R0012 new; then R0002 (updated),
    # R0007 (unchanged) and R0011 (inserted) turn out repeated later in the file.
    after = pl.concat([before, lab_rows(12).slice(10, 2)]).with_columns(
        pl.when(pl.col("record_id").is_in(["R0002", "R0005"]))
        .then(pl.lit("corrected"))
        .otherwise(pl.col("result_value"))
        .alias("result_value")
    )
    rows = streamed(target, after, MERGE, chunk=5)
    rows.drop_keys(["R0002", "R0007", "R0011"], rows=3)
    with caplog.at_level(logging.INFO):
        done = load(target, rows)
    assert FELL_BACK not in caplog.text
    counts = done.result
    assert (done.rows_sent, counts.rows_inserted, counts.rows_updated) == (9, 1, 1)
    assert (counts.rows_unchanged, counts.rows_confirmed) == (7, 9)
    now = {row[0]: row for row in fetch(postgres_url, snapshot)}
    was = {row[0]: row for row in loaded}
    assert now["R0002"] == was["R0002"]  # put back exactly, its lineage too
    assert now["R0007"] == was["R0007"]
    assert "R0011" not in now
    assert now["R0005"][1:3] == ("corrected", counts.load_id)
    assert now["R0012"][2] == counts.load_id
    assert first.result.load_id == was["R0001"][2] == now["R0001"][2]
