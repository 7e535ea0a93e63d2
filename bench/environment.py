"""What every end-to-end case runs against: sshd, PostgreSQL, the feed scenario, a Prefect server.

Everything is real and local and removed at the end: an OpenSSH sshd serves the
partner's drop folder, one PostgreSQL cluster holds the ledger and warehouse databases,
the lab_results scenario (keys, secrets, feed YAML) is the one the demo and the tests
use, and the `nightly-feed` flow reports to a Prefect API server started here.

Settings the children read from the environment (ledger URL, warehouse URL, staging
folder, Prefect API) are set in `os.environ` before each child is spawned.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from bench.checks import FileExpectation, RunFigures, check_run, warehouse_rows
from bench.children import pipeline_child, run_child

if TYPE_CHECKING:
    from tests.support.postgres import PostgresServer
    from tests.support.sshd import SshdServer

    from batchbridge.demo.scenario import LabFeedScenario

FEED = "lab_results"
WAREHOUSE_URL_ENV = "BB_BENCH_WAREHOUSE_URL"
LEDGER_URL_ENV = "BATCHBRIDGE_DATABASE_URL"
PAGE = 200  # the most task runs the Prefect API returns at once


@dataclass
class Setup:
    """Seconds spent before the measured runs, one line each."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, label: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started


@dataclass
class BenchEnv:
    """The running servers and the scenario of one bench invocation."""

    workdir: Path
    sshd: SshdServer
    postgres: PostgresServer
    scenario: LabFeedScenario
    setup: Setup
    warehouse_url: str = ""
    ledger_url: str = ""

    @property
    def drop_dir(self) -> Path:
        return self.scenario.endpoint.drop_dir

    def fresh_databases(self, label: str) -> None:
        """A new, empty ledger and warehouse (named after `label`) for the next runs."""
        from batchbridge.ledger.store import LedgerStore

        with self.setup.timed("fresh ledger + warehouse"):
            self.warehouse_url = self.postgres.create_database(f"warehouse_{label}")
            self.ledger_url = self.postgres.create_database(f"ledger_{label}")
            os.environ[WAREHOUSE_URL_ENV] = self.warehouse_url
            os.environ[LEDGER_URL_ENV] = self.ledger_url
            # Migrated up front, as a deployed ledger would be; not part of a run.
            LedgerStore.from_url(self.ledger_url).engine.dispose()

    def run_pipeline(
        self, label: str, expected: list[FileExpectation], *, force: bool
    ) -> RunFigures:
        """One flow run in a pipeline child, its counts checked against `expected`."""
        print(f"running: {label} ...", flush=True)
        config_dir = str(self.scenario.config_dir)
        child = run_child(pipeline_child, config_dir, FEED, force, sample_rss=True)
        windows = task_windows(child["flow_run_id"])
        streams = [window.seconds for window in windows if window.kind == "stream"]
        figures = RunFigures(
            label=label,
            child=child,
            warehouse_rows=warehouse_rows(self.warehouse_url, self.scenario.tenant),
            stream_s=sum(streams) if streams else None,
            rss_by_task=peak_rss_by_task(child.pop("rss_samples", []), windows),
        )
        check_run(figures, expected, rerun=force)
        return figures

    def set_parallel_files(self, count: int) -> None:
        """Set the feed YAML's `parallel_files` (files of one run processed at once)."""
        path = self.scenario.feed_path
        feed: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
        feed["parallel_files"] = count
        path.write_text(yaml.safe_dump(feed, sort_keys=False), encoding="utf-8")


@contextmanager
def bench_environment(workdir: Path, engine: str, setup: Setup) -> Iterator[BenchEnv]:
    """Start sshd, PostgreSQL and a Prefect server and build the scenario; stop them after."""
    # Settings every process (this one, the children, the Prefect server) reads from the
    # environment; set before prefect is first imported.
    os.environ["PREFECT_HOME"] = str(workdir / "prefect-home")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["BATCHBRIDGE_STAGING_DIR"] = str(workdir / "staging")

    from tests.support.feed_scenarios import postgres_target
    from tests.support.postgres import start_postgres
    from tests.support.sshd import start_sshd

    from batchbridge.demo.scenario import build_lab_scenario

    with ExitStack() as stack:
        with setup.timed("sshd start"):
            sshd = start_sshd(workdir / "sshd")
            stack.callback(sshd.stop)
        with setup.timed("PostgreSQL start"):
            postgres = start_postgres(workdir / "pg")
            stack.callback(postgres.stop)
        with setup.timed("scenario (keys, YAML)"):
            endpoint = sshd.endpoint(sshd.root / "outbound")
            scenario = build_lab_scenario(
                workdir / "feed",
                endpoint,
                targets=[postgres_target(WAREHOUSE_URL_ENV)],
                engine=engine,
            )
            stack.callback(scenario.close)
        with setup.timed("Prefect server start"):
            from prefect.server.api.server import SubprocessASGIServer

            prefect_server = SubprocessASGIServer()
            stack.callback(prefect_server.stop)
            prefect_server.start(timeout=180)
            os.environ["PREFECT_API_URL"] = prefect_server.api_url
        yield BenchEnv(workdir, sshd, postgres, scenario, setup)


@dataclass(frozen=True)
class TaskWindow:
    """When one task run of a flow run ran: its kind ('stream', 'load'...), start, end."""

    kind: str
    start: float  # seconds since the epoch
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def task_windows(flow_run_id: str, wait_s: float = 20.0) -> list[TaskWindow]:
    """Every finished task run of the flow run, from the Prefect API.

    Task run states reach the server as events, shortly after the flow returns: waits up
    to `wait_s` for the stream task runs (every file has one) to be final.
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.objects import TaskRun

    of_flow = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            runs: list[TaskRun] = []
            while len(runs) % PAGE == 0:
                page = client.read_task_runs(flow_run_filter=of_flow, limit=PAGE, offset=len(runs))
                runs += page
                if not page:
                    break
            streams = [run for run in runs if run.name.startswith("stream ")]
            done = all(run.state is not None and run.state.is_final() for run in streams)
            if (streams and done) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return [
        TaskWindow(_kind(run.name), run.start_time.timestamp(), run.end_time.timestamp())
        for run in runs
        if run.start_time is not None and run.end_time is not None
    ]


def _kind(task_run_name: str) -> str:
    """A task run's kind: 'stream' of 'stream LAB_….pgp', 'quarantine' of 'quarantine-3f1'."""
    return re.split(r"[ -]", task_run_name)[0]


def peak_rss_by_task(
    samples: list[tuple[float, float]], windows: list[TaskWindow]
) -> dict[str, float]:
    """The highest sampled RSS (MiB) while a task of each kind ran."""
    peaks: dict[str, float] = {}
    for window in windows:
        inside = [mib for at, mib in samples if window.start <= at <= window.end]
        if inside:
            peaks[window.kind] = max(peaks.get(window.kind, 0.0), *inside)
    return peaks
