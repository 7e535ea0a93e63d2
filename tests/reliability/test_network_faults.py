"""Network faults between us and sshd / PostgreSQL: retried or failed clearly, never partial."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

from batchbridge.config import SftpSourceConfig
from batchbridge.connectors.sources.base import RemoteFile
from batchbridge.connectors.sources.sftp import SftpSource
from batchbridge.connectors.targets.base import LoadRequest, LoadResult
from batchbridge.connectors.targets.postgres import PostgresTarget
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.demo.scenario import (
    LabFeedScenario,
    lab_file_name,
)
from batchbridge.errors import TransientSourceError, TransientTargetError
from batchbridge.validations.base import ROW_COLUMN
from tests.integration.flow_helpers import libpq_url, run_flow, target_rows
from tests.plugins.scenario import postgres_lab_scenario
from tests.plugins.sshd import sftp_config_for
from tests.reliability.conftest import FULL, Figures
from tests.support.faultproxy import Direction, Fault, FaultKind, FaultProxy
from tests.support.postgres import PostgresServer
from tests.support.sshd import SshdServer

pytestmark = pytest.mark.integration

OLD = time.time() - 3600
FILE_BYTES = 3 * 1024 * 1024
# Past the SSH handshake and the listing (a few KB), well before the end of the file.
MID_DOWNLOAD = 1024 * 1024
# The channel timeout: how long a stalled read waits before it counts as a dropped link.
STALL_TIMEOUT = 1.0
MAX_ATTEMPTS = 3


# -- fixtures -------------------------------------------------------------------------


@contextmanager
def counted_proxy(host: str, port: int, figures: Figures) -> Iterator[FaultProxy]:
    """A fault proxy in front of `host`:`port`; the faults it fired go to the figures."""
    with FaultProxy(host, port) as proxy:
        try:
            yield proxy
        finally:
            figures.add("faults_injected", proxy.faults_injected)


@pytest.fixture
def sshd_proxy(sshd_server: SshdServer, reliability_figures: Figures) -> Iterator[FaultProxy]:
    """A fault proxy in front of the module's sshd; its fired faults go to the figures."""
    with counted_proxy(sshd_server.host, sshd_server.port, reliability_figures) as proxy:
        yield proxy


def proxied_sftp_config(
    server: SshdServer, proxy: FaultProxy, **overrides: Any
) -> SftpSourceConfig:
    """An SFTP config for `server` that connects through `proxy` (same pinned host key)."""
    values: dict[str, Any] = {
        "port": proxy.port,
        "max_attempts": MAX_ATTEMPTS,
        "connect_timeout_seconds": STALL_TIMEOUT,
        "stable_seconds": 0,
    }
    values.update(overrides)
    return sftp_config_for(server, **values)


def put(folder: Path, name: str, data: bytes) -> None:
    path = folder / name
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))


def staged_names(staging: Path) -> list[str]:
    """Everything in staging, temp files included (a partial download must not survive)."""
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


def ready_file(
    server: SshdServer, proxy: FaultProxy, size: int = FILE_BYTES, **overrides: Any
) -> tuple[SftpSource, RemoteFile, bytes]:
    """Put a random file in a fresh remote folder and list it through the proxy."""
    config = proxied_sftp_config(server, proxy, **overrides)
    data = secrets.token_bytes(size)
    put(Path(config.remote_dir), "LAB_1.csv.pgp", data)
    source = SftpSource(config, backoff_seconds=0.01)
    (remote,) = source.list_ready()
    return source, remote, data


# -- SFTP: one fault, then the retry passes ----------------------------------------------

SFTP_ONE_SHOT: list[tuple[FaultKind, Direction, int]] = [
    ("reset", "downstream", MID_DOWNLOAD),
    ("truncate", "downstream", MID_DOWNLOAD),
    ("stall", "downstream", MID_DOWNLOAD),
]
if FULL:
    # More places to cut: right at the start of the file, near its end, and on the
    # request side (the client's read requests) rather than the data side.
    SFTP_ONE_SHOT += [
        ("reset", "downstream", 40_000),
        ("reset", "downstream", FILE_BYTES - 64_000),
        ("truncate", "downstream", FILE_BYTES - 1_000),
        ("stall", "downstream", FILE_BYTES // 2),
        ("reset", "upstream", 3_000),
        ("truncate", "upstream", 3_000),
        ("stall", "upstream", 3_000),
    ]


@pytest.mark.parametrize(
    ("kind", "direction", "after"),
    SFTP_ONE_SHOT,
    ids=[f"{k}-{d}-{a}" for k, d, a in SFTP_ONE_SHOT],
)
def test_fault_mid_download_is_retried_and_the_file_arrives_whole(
    sshd_server: SshdServer,
    sshd_proxy: FaultProxy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kind: FaultKind,
    direction: Direction,
    after: int,
) -> None:
    source, remote, data = ready_file(sshd_server, sshd_proxy)
    staging = tmp_path / "staging"
    sshd_proxy.inject(Fault(kind, after_bytes=after, direction=direction, times=1))
    with source, caplog.at_level(logging.WARNING):
        fetched = source.fetch(remote, staging)
    assert sshd_proxy.faults_injected == 1
    assert fetched.size == len(data)
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    assert fetched.local_path.read_bytes() == data
    assert staged_names(staging) == ["LAB_1.csv.pgp"]
    retries = [r.getMessage() for r in caplog.records if "attempt 1 of 3 failed" in r.getMessage()]
    assert len(retries) == 1, [r.getMessage() for r in caplog.records]


# -- SFTP: the fault persists, the fetch gives up clearly ----------------------------------

# A stall costs a channel timeout per attempt: the one-shot stall above covers the quick run.
SFTP_PERSISTENT: list[FaultKind] = ["reset", "truncate", "stall"] if FULL else ["reset", "truncate"]


@pytest.mark.parametrize("kind", SFTP_PERSISTENT)
def test_persistent_fault_fails_after_max_attempts_leaving_nothing_staged(
    sshd_server: SshdServer, sshd_proxy: FaultProxy, tmp_path: Path, kind: FaultKind
) -> None:
    source, remote, _ = ready_file(sshd_server, sshd_proxy)
    staging = tmp_path / "staging"
    sshd_proxy.inject(Fault(kind, after_bytes=MID_DOWNLOAD, times=None))
    started = time.monotonic()
    with source, pytest.raises(TransientSourceError) as caught:
        source.fetch(remote, staging)
    elapsed = time.monotonic() - started
    error = caught.value
    assert error.reason == "source_transient"
    assert f"fetch LAB_1.csv.pgp on 127.0.0.1:{sshd_proxy.port}" in str(error)
    assert f"failed after {MAX_ATTEMPTS} attempts" in str(error)
    assert sshd_proxy.faults_injected == MAX_ATTEMPTS
    # No partial download survives: neither the temp file nor anything under the name.
    assert staged_names(staging) == []
    # A stall costs one channel timeout per attempt, not forever.
    assert elapsed < MAX_ATTEMPTS * (STALL_TIMEOUT + 3) + 5, elapsed


@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_fault_during_the_handshake_is_retried(
    sshd_server: SshdServer, sshd_proxy: FaultProxy, kind: FaultKind
) -> None:
    config = proxied_sftp_config(sshd_server, sshd_proxy)
    put(Path(config.remote_dir), "LAB_1.csv.pgp", b"abc")
    # The first bytes from the server are its SSH banner.
    sshd_proxy.inject(Fault(kind, after_bytes=0, times=1))
    with SftpSource(config, backoff_seconds=0.01) as source:
        assert [r.name for r in source.list_ready()] == ["LAB_1.csv.pgp"]
    assert sshd_proxy.faults_injected == 1


@pytest.mark.skipif(not FULL, reason="full reliability mode: costs a timeout per attempt")
def test_handshake_that_never_completes_fails_clearly(
    sshd_server: SshdServer, sshd_proxy: FaultProxy
) -> None:
    config = proxied_sftp_config(sshd_server, sshd_proxy)
    sshd_proxy.inject(Fault("stall", after_bytes=0, times=None))
    with (
        SftpSource(config, backoff_seconds=0.01) as source,
        pytest.raises(TransientSourceError, match=f"failed after {MAX_ATTEMPTS} attempts"),
    ):
        source.list_ready()
    assert sshd_proxy.faults_injected == MAX_ATTEMPTS


# -- SFTP through the whole nightly flow ----------------------------------------------------

FILE_DATE = date(2026, 11, 20)


@pytest.fixture
def proxied_scenario(
    tmp_path: Path,
    sshd_server: SshdServer,
    sshd_proxy: FaultProxy,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LabFeedScenario]:
    """The lab_results feed, its SFTP source reached through the fault proxy."""
    endpoint = sshd_server.endpoint(port=sshd_proxy.port)
    built = postgres_lab_scenario(tmp_path, endpoint, postgres_url, monkeypatch)
    yield built
    built.close()


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.usefixtures("prefect_api")
def test_nightly_run_fails_the_file_on_a_dead_link_and_loads_it_once_when_healed(
    proxied_scenario: LabFeedScenario,
    sshd_proxy: FaultProxy,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    rows = 4000
    frame = generate_lab_rows(rows, seed=5, file_date=FILE_DATE)
    name = lab_file_name(FILE_DATE)
    dropped = proxied_scenario.drop_file(name, frame, compress_algo="none")
    assert dropped.stat().st_size > 256 * 1024
    # Every connection dies 256 KB into the download (listings are a few KB).
    sshd_proxy.inject(Fault("reset", after_bytes=256 * 1024, times=None))

    failed = run_flow(proxied_scenario)

    assert failed.status == "failed"
    (report,) = failed.files
    assert (report.outcome, report.failed_stage, report.reason) == (
        "failed",
        "fetch",
        "source_transient",
    )
    assert sshd_proxy.faults_injected == 2  # the feed's max_attempts
    assert target_rows(postgres_url) == {}
    assert all_files(tmp_path / "staging") == []

    sshd_proxy.clear()
    healed = run_flow(proxied_scenario)

    assert healed.status == "succeeded", healed.to_dict()
    (report,) = healed.files
    assert report.outcome == "reconciled" and report.balanced
    assert report.rows_read == rows
    assert report.targets["warehouse"].inserted == rows
    assert len(target_rows(postgres_url)) == rows
    assert sshd_proxy.faults_injected == 2


# -- PostgreSQL ---------------------------------------------------------------------------

TENANT = "acme_lab"
PG_ROWS = 40_000 if not FULL else 120_000
COPY_BATCH = 5_000


@pytest.fixture
def pg_proxy(postgres_server: PostgresServer, reliability_figures: Figures) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's PostgreSQL."""
    with counted_proxy(postgres_server.host, postgres_server.port, reliability_figures) as proxy:
        yield proxy


def via(url: str, server: PostgresServer, proxy: FaultProxy) -> str:
    """The same database URL, reached through `proxy`."""
    direct = f"@{server.host}:{server.port}/"
    assert direct in url
    return url.replace(direct, f"@{proxy.listen_host}:{proxy.port}/")


def make_target(url: str, table: str = "results", **options: Any) -> PostgresTarget:
    values: dict[str, Any] = {
        "max_attempts": MAX_ATTEMPTS,
        "retry_initial_wait": 0.05,
        "retry_max_wait": 0.5,
        "copy_batch_rows": COPY_BATCH,
    }
    values.update(options)
    return PostgresTarget("warehouse", url, table, "public", ["value", "note", "code"], **values)


def frame_of(keys: range, version: str) -> pl.DataFrame:
    """Rows keyed 'K<n>' whose values carry `version` (to tell an update from a stale row)."""
    ids = [f"K{n:07d}" for n in keys]
    return pl.DataFrame(
        {
            "id": ids,
            "value": [f"{version}-{n}" for n in keys],
            "note": [f"note {n} " + "x" * 60 for n in keys],
            "code": [str(n % 97) for n in keys],
            ROW_COLUMN: pl.Series(range(1, len(ids) + 1), dtype=pl.UInt32),
        }
    )


def request_for(frame: pl.DataFrame, load_id: str | None = None) -> LoadRequest:
    return LoadRequest(
        tenant=TENANT,
        natural_key=("id",),
        load_id=load_id or f"load-{uuid.uuid4().hex[:12]}",
        file_id="file-1",
        rows=frame,
    )


def table_rows(url: str, table: str = "results") -> list[tuple[str, str, str]]:
    """(id, value, load_id) of every row of the tenant ([] when the table does not exist)."""
    with psycopg.connect(libpq_url(url)) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if exists is None or exists[0] is None:
            return []
        return conn.execute(
            f"SELECT id, value, load_id FROM {table} WHERE tenant = %s",  # noqa: S608 - test table
            (TENANT,),
        ).fetchall()


def expect_exactly(
    url: str, frame: pl.DataFrame, load_id: str, figures: Figures, table: str = "results"
) -> None:
    """The table holds every row of `frame` exactly once with its new value; nothing else."""
    rows = table_rows(url, table)
    state = {key: (value, load) for key, value, load in rows}
    wanted = dict(zip(frame["id"].to_list(), frame["value"].to_list(), strict=True))
    lost = sum(1 for key in wanted if key not in state)
    doubled = len(rows) - len(state)
    stale = sum(1 for key, value in wanted.items() if key in state and state[key][0] != value)
    extra = sum(1 for key in state if key not in wanted)
    figures.add("rows_lost", lost)
    figures.add("rows_doubled", doubled)
    assert (lost, doubled, stale, extra) == (0, 0, 0, 0)
    assert {load for _, load in state.values()} == {load_id}


PG_OFFSETS = [1024 * 1024] if not FULL else [64 * 1024, 1024 * 1024, 3 * 1024 * 1024]


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "half-existing"])
@pytest.mark.parametrize("after", PG_OFFSETS)
def test_reset_mid_copy_is_retried_and_leaves_exactly_one_copy(
    postgres_url: str,
    postgres_server: PostgresServer,
    pg_proxy: FaultProxy,
    reliability_figures: Figures,
    existing: bool,
    after: int,
) -> None:
    keys = range(PG_ROWS)
    if existing:
        # Half the keys are already there with an older value: the retried load must
        # update them (not insert twice) and insert the rest.
        with make_target(postgres_url) as direct:
            direct.load(request_for(frame_of(range(0, PG_ROWS, 2), "old")))
    frame = frame_of(keys, "new")
    request = request_for(frame)
    pg_proxy.inject(Fault("reset", after_bytes=after, direction="upstream", times=1))
    with make_target(via(postgres_url, postgres_server, pg_proxy)) as target:
        result = target.load(request)
    assert pg_proxy.faults_injected == 1
    half = PG_ROWS // 2 if existing else 0
    # The first attempt left nothing: the retry inserted / updated the whole batch itself.
    assert (result.rows_inserted, result.rows_updated) == (PG_ROWS - half, half)
    assert result.rows_confirmed == PG_ROWS
    expect_exactly(postgres_url, frame, request.load_id, reliability_figures)


# PostgreSQL's CommandComplete for COMMIT: 'C', int32 length 11, "COMMIT\0".
COMMIT_REPLY = b"C\x00\x00\x00\x0bCOMMIT\x00"


def test_reset_after_commit_before_the_reply_is_retried_without_doubling(
    postgres_url: str,
    postgres_server: PostgresServer,
    pg_proxy: FaultProxy,
    reliability_figures: Figures,
) -> None:
    frame = frame_of(range(PG_ROWS), "new")
    request = request_for(frame)
    # The server commits, the client never hears so: the retry must find the rows there.
    pg_proxy.inject(Fault("reset", match=COMMIT_REPLY, times=1))
    with make_target(via(postgres_url, postgres_server, pg_proxy)) as target:
        result = target.load(request)
    assert pg_proxy.faults_injected == 1
    assert (result.rows_inserted, result.rows_updated, result.rows_unchanged) == (0, 0, PG_ROWS)
    assert result.rows_confirmed == PG_ROWS
    expect_exactly(postgres_url, frame, request.load_id, reliability_figures)


def test_stall_mid_copy_delays_but_does_not_break_the_load(
    postgres_url: str,
    postgres_server: PostgresServer,
    pg_proxy: FaultProxy,
    reliability_figures: Figures,
) -> None:
    frame = frame_of(range(PG_ROWS), "new")
    request = request_for(frame)
    pg_proxy.inject(
        Fault("stall", after_bytes=MID_DOWNLOAD, direction="upstream", stall_seconds=1.0)
    )
    started = time.monotonic()
    with make_target(via(postgres_url, postgres_server, pg_proxy)) as target:
        result = target.load(request)
    assert time.monotonic() - started >= 1.0
    assert pg_proxy.faults_injected == 1
    assert (result.rows_inserted, result.rows_confirmed) == (PG_ROWS, PG_ROWS)
    expect_exactly(postgres_url, frame, request.load_id, reliability_figures)


def test_persistent_reset_gives_up_clearly_and_loads_nothing(
    postgres_url: str, postgres_server: PostgresServer, pg_proxy: FaultProxy
) -> None:
    frame = frame_of(range(PG_ROWS), "new")
    pg_proxy.inject(Fault("reset", after_bytes=MID_DOWNLOAD, direction="upstream", times=None))
    with (
        make_target(via(postgres_url, postgres_server, pg_proxy)) as target,
        pytest.raises(TransientTargetError) as caught,
    ):
        target.load(request_for(frame))
    message = str(caught.value)
    assert caught.value.reason == "target_transient"
    assert f"gave up after {MAX_ATTEMPTS} attempts" in message
    assert "copy rows to staging" in message
    assert "K0" not in message  # no row value in the error
    assert pg_proxy.faults_injected == MAX_ATTEMPTS
    assert table_rows(postgres_url) == []  # the table's creation rolled back too


# -- PostgreSQL restarted under a load ------------------------------------------------------


def wait_for_active(url: str, prefix: str, deadline: float) -> bool:
    """Poll pg_stat_activity until a statement starting with `prefix` is running."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE %s AND pid <> pg_backend_pid()",
                (prefix + "%",),
            ).fetchone()
            if row is not None and row[0]:
                return True
            time.sleep(0.005)
    return False


RESTART_PHASES = ["COPY"] if not FULL else ["COPY", "WITH upserted"]


@pytest.mark.parametrize("phase", RESTART_PHASES, ids=lambda p: p.split()[-1].lower())
def test_server_restart_during_a_load_leaves_no_partial_batch_and_no_duplicate(
    postgres_url: str,
    postgres_server: PostgresServer,
    reliability_figures: Figures,
    phase: str,
) -> None:
    rows = PG_ROWS * 4
    with make_target(postgres_url) as seed:
        seed.load(request_for(frame_of(range(0, rows, 2), "old")))
    frame = frame_of(range(rows), "new")
    request = request_for(frame)
    restarted = threading.Event()
    problems: list[BaseException] = []

    def restart_when_busy() -> None:
        try:
            if wait_for_active(postgres_url, phase, time.monotonic() + 60):
                postgres_server.restart()
                restarted.set()
        except BaseException as exc:  # reported by the main thread
            problems.append(exc)

    thread = threading.Thread(target=restart_when_busy, name="pg-restart")
    thread.start()
    result: LoadResult | None = None
    try:
        # Enough attempts and patience to outlast a restart (a second or two).
        with make_target(
            postgres_url, max_attempts=8, retry_initial_wait=0.2, retry_max_wait=2.0
        ) as target:
            result = target.load(request)
    finally:
        thread.join(120)
    assert not problems, problems
    assert restarted.is_set(), f"the load finished before a {phase} statement was seen"
    reliability_figures.add("faults_injected", 1)
    assert result is not None
    half = rows // 2
    assert (result.rows_inserted, result.rows_updated) == (half, half)
    expect_exactly(postgres_url, frame, request.load_id, reliability_figures)
