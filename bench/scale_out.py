"""Scale-out: four tenants' feeds on a Prefect server (PostgreSQL) and two process workers.

`make scale-out` runs it. Everything is real and local and removed at the end:

- one OpenSSH sshd serves every partner's drop folder (one folder and PGP key pair per
  feed; the SSH login key is the sshd fixture's, shared);
- one PostgreSQL cluster holds the Prefect server's database (asyncpg), the ledger and
  the warehouse (a table per feed);
- `prefect server start` on that database, and two `prefect worker start --type process`
  workers (two flow runs each) on the `batchbridge` pool;
- four tenants with two feeds each, deployed by `batchbridge deploy --apply`: every
  tenant's runs go to its own work queue, limited to one flow run at a time, and each
  run holds the tenant's global concurrency slot while it works.

Phase 1 (baseline) triggers the nightly runs of the three healthy tenants at once;
phase 2 triggers all four tenants at once, while delta_lab's partner signs with a key
we never pinned, so every delta_lab file fails verification. The script prints, per
run and per tenant, the queue wait and run time, the outcomes, and checks that the
tenant limit held, that tenants ran side by side, and that the failing tenant neither
stopped nor slowed the others: their first runs were taken by a worker at once, and
each healthy tenant finished within 1.5x + 5 s of the healthy tenants' mean baseline.

Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from batchbridge.demo.scenario import LabFeedScenario

REPO_ROOT = Path(__file__).resolve().parents[1]
TENANTS = ("acme_lab", "birch_lab", "cedar_lab", "delta_lab")
FAILING_TENANT = "delta_lab"
FEEDS_PER_TENANT = ("core", "outreach")
FILES_PER_FEED = 3
ROWS_PER_FILE = 2000
WORKERS = 2
RUNS_PER_WORKER = 2
WAREHOUSE_URL_ENV = "BB_SCALE_WAREHOUSE_URL"
FIRST_DATE = date(2026, 11, 2)
RUN_TIMEOUT_SECONDS = 300
SLOWDOWN_FACTOR = 1.5
SLOWDOWN_SLACK_SECONDS = 5.0
FIRST_PICK_SECONDS = 3.0


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn a polite kill into an exception so every `finally` stops its server.
    raise SystemExit(128 + signum)


@dataclass
class Feed:
    """One partner feed of a tenant: its scenario (keys, drop folder) and files."""

    tenant: str
    name: str
    scenario: LabFeedScenario
    stranger_fpr: str | None = None
    dropped: int = 0

    @property
    def deployment(self) -> str:
        return f"nightly-feed/{self.name}-nightly"


@dataclass
class RunResult:
    """One flow run as Prefect and the ledger saw it."""

    tenant: str
    feed: str
    flow_run: FlowRun
    report: dict[str, Any] | None
    picked: datetime | None = None  # first Pending: a worker took the run from the queue
    worked: tuple[datetime, datetime] | None = None  # the ledger run, inside the tenant slot

    @property
    def state(self) -> str:
        return self.flow_run.state.type.value if self.flow_run.state else "?"

    @property
    def created(self) -> datetime:
        assert self.flow_run.created is not None
        return self.flow_run.created

    @property
    def start(self) -> datetime | None:
        return self.flow_run.start_time

    @property
    def end(self) -> datetime | None:
        return self.flow_run.end_time

    @property
    def queue_wait(self) -> float | None:
        """Trigger -> a worker took it (the tenant limit and free worker slots decide)."""
        return (self.picked - self.created).total_seconds() if self.picked else None

    @property
    def start_up(self) -> float | None:
        """Worker took it -> Running: a new Python process imports and loads the flow."""
        if self.picked is None or self.start is None:
            return None
        return (self.start - self.picked).total_seconds()

    @property
    def run_time(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()

    def files(self, outcome: str) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = (self.report or {}).get("files") or []
        return [f for f in files if f.get("outcome") == outcome]


@dataclass
class Phase:
    """The runs triggered together, and what they showed."""

    label: str
    runs: list[RunResult] = field(default_factory=list)

    def tenant_runs(self, tenant: str) -> list[RunResult]:
        return [run for run in self.runs if run.tenant == tenant]

    def span(self, tenant: str) -> float | None:
        """First trigger to last finish of a tenant's runs."""
        runs = self.tenant_runs(tenant)
        ends = [run.end for run in runs]
        if not runs or any(end is None for end in ends):
            return None
        return (max(e for e in ends if e) - min(run.created for run in runs)).total_seconds()


# -- setup ---------------------------------------------------------------------------


def _absolute_refs(value: Any, base: Path) -> Any:
    """`file:` references and mapping paths made absolute, so all YAMLs share one folder."""
    if isinstance(value, dict):
        return {k: _absolute_refs(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute_refs(v, base) for v in value]
    if isinstance(value, str) and value.startswith("file:") and not value[5:].startswith("/"):
        return f"file:{(base / value[5:]).resolve()}"
    return value


def _build_feed(tenant: str, suffix: str, workdir: Path, sshd: Any, config_dir: Path) -> Feed:
    """A lab_results feed for `tenant` on the shared sshd, its YAML in `config_dir`."""
    import yaml
    from tests.support.feed_scenarios import postgres_target

    from batchbridge.demo.scenario import build_lab_scenario

    name = f"{tenant}_{suffix}"
    endpoint = sshd.endpoint(sshd.root / name)
    scenario = build_lab_scenario(
        workdir / "tenants" / name, endpoint, targets=[postgres_target(WAREHOUSE_URL_ENV)]
    )
    data = yaml.safe_load(scenario.feed_path.read_text(encoding="utf-8"))
    data = _absolute_refs(data, scenario.feed_path.parent)
    data["mappings"] = {
        column: str((scenario.feed_path.parent / path).resolve())
        for column, path in data["mappings"].items()
    }
    data.update(feed=name, tenant=tenant, description=f"{tenant} {suffix} lab results")
    data["targets"][0]["table"] = f"lab_result_{name}"
    (config_dir / f"{name}.yaml").write_text(
        yaml.safe_dump(data, sort_keys=False), encoding="utf-8"
    )
    feed = Feed(tenant=tenant, name=name, scenario=scenario)
    if tenant == FAILING_TENANT:
        # The partner now signs with a key nobody confirmed with us: never pinned.
        feed.stranger_fpr = scenario.partner.generate_key(
            "Delta Lab New Signing", "new-signing@delta-lab.example"
        )
    return feed


def _drop_files(feed: Feed, count: int) -> None:
    """`count` new files with new record ids (so every good row is an insert)."""
    from batchbridge.demo.lab_data import generate_lab_rows
    from batchbridge.demo.scenario import lab_file_name

    for _ in range(count):
        index = feed.dropped
        file_date = FIRST_DATE + timedelta(days=index)
        rows = generate_lab_rows(
            ROWS_PER_FILE * (index + 1), seed=index + 1, file_date=file_date
        ).tail(ROWS_PER_FILE)
        signer: str | bool = feed.stranger_fpr or True
        feed.scenario.drop_file(lab_file_name(file_date), rows, signer_fpr=signer)
        feed.dropped += 1


# -- running -------------------------------------------------------------------------


def _run_phase(label: str, feeds: list[Feed], ledger_url: str) -> Phase:
    """Trigger every feed's nightly deployment at once; wait until all are final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment

    from batchbridge.ledger.store import LedgerStore

    print(f"\n{label}: triggering {len(feeds)} runs at once ...", flush=True)
    triggered = [
        (feed, run_deployment(feed.deployment, timeout=0)) for feed in feeds
    ]  # timeout=0: create the flow run and return at once
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    final: dict[Any, FlowRun] = {}
    with get_client(sync_client=True) as client:
        while len(final) < len(triggered):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: runs not final after {RUN_TIMEOUT_SECONDS} s")
            for _feed, flow_run in triggered:
                if flow_run.id in final:
                    continue
                current = client.read_flow_run(flow_run.id)
                if current.state is not None and current.state.is_final():
                    final[flow_run.id] = current
            time.sleep(0.5)
        pending = {
            flow_run.id: [
                state.timestamp
                for state in client.read_flow_run_states(flow_run.id)
                if state.type == StateType.PENDING
            ]
            for _feed, flow_run in triggered
        }
    store = LedgerStore.from_url(ledger_url)
    phase = Phase(label)
    try:
        for feed, flow_run in triggered:
            run = store.run_for_flow_run(str(flow_run.id))
            phase.runs.append(
                RunResult(
                    tenant=feed.tenant,
                    feed=feed.name,
                    flow_run=final[flow_run.id],
                    report=run.report if run is not None else None,
                    picked=min(pending[flow_run.id], default=None),
                    worked=(run.started_at, run.finished_at)
                    if run is not None and run.finished_at is not None
                    else None,
                )
            )
    finally:
        store.engine.dispose()
    return phase


# -- checks and printing -------------------------------------------------------------


def _fmt(seconds: float | None) -> str:
    return f"{seconds:7.1f} s" if seconds is not None else f"{'-':>9}"


def _print_phase(phase: Phase) -> None:
    print(f"\n{phase.label}")
    print(
        f"  {'tenant':<10} {'feed':<19} {'state':<9} {'queued':>9} {'start-up':>9} "
        f"{'run':>9} {'finished':>9}  {'files ok':>8} {'failed':>6}  reasons"
    )
    origin = min(run.created for run in phase.runs)
    for run in sorted(phase.runs, key=lambda r: (r.tenant, r.start or r.created)):
        failed = run.files("failed")
        reasons = sorted({str(f.get("reason")) for f in failed})
        finished = (run.end - origin).total_seconds() if run.end else None
        print(
            f"  {run.tenant:<10} {run.feed:<19} {run.state:<9} {_fmt(run.queue_wait)} "
            f"{_fmt(run.start_up)} {_fmt(run.run_time)} {_fmt(finished)}  "
            f"{len(run.files('reconciled')):>8} {len(failed):>6}  {', '.join(reasons) or '-'}"
        )
    print(f"  {'tenant':<11} {'span (first trigger -> last finish)':>36}")
    for tenant in sorted({run.tenant for run in phase.runs}):
        print(f"  {tenant:<11} {_fmt(phase.span(tenant)):>36}")


def _overlaps(runs: list[RunResult], *, working: bool = False) -> int:
    """The most runs at the same moment in a worker (Pending or Running), or `working`:
    processing files (the ledger run, which the flow starts once it holds a tenant slot).
    """
    events: list[tuple[datetime, int]] = []
    for run in runs:
        interval = run.worked if working else (run.picked, run.end)
        if interval is not None and interval[0] is not None and interval[1] is not None:
            events += [(interval[0], 1), (interval[1], -1)]
    most = current = 0
    for _moment, delta in sorted(events, key=lambda e: (e[0], e[1])):
        current += delta
        most = max(most, current)
    return most


def _checks(baseline: Phase, mixed: Phase) -> list[tuple[str, bool]]:
    healthy = [t for t in TENANTS if t != FAILING_TENANT]
    checks: list[tuple[str, bool]] = []
    phases = (baseline, mixed)
    working = max(_overlaps(p.tenant_runs(t), working=True) for p in phases for t in TENANTS)
    in_workers = max(_overlaps(p.tenant_runs(t)) for p in phases for t in TENANTS)
    checks.append(
        (
            f"tenant limit held (most runs of one tenant working at once: {working}; "
            f"in workers at once: {in_workers})",
            working <= 1,
        )
    )
    side_by_side = _overlaps(mixed.runs)
    checks.append(
        (
            f"tenants ran side by side (most runs in workers at once, phase 2: {side_by_side})",
            side_by_side >= 3,
        )
    )
    good_runs = [run for phase in (baseline, mixed) for run in phase.runs if run.tenant in healthy]
    all_ok = all(run.state == "COMPLETED" and not run.files("failed") for run in good_runs)
    files_ok = sum(len(run.files("reconciled")) for run in good_runs)
    checks.append((f"healthy tenants: every run completed, {files_ok} files reconciled", all_ok))
    bad_runs = mixed.tenant_runs(FAILING_TENANT)
    bad_reasons = {f.get("reason") for run in bad_runs for f in run.files("failed")}
    bad_ok = (
        all(run.state == "FAILED" for run in bad_runs)
        and bad_reasons == {"wrong_signer"}
        and not any(run.files("reconciled") for run in bad_runs)
    )
    checks.append(
        (
            f"{FAILING_TENANT}: every run failed, every file refused "
            f"({', '.join(map(str, bad_reasons))})",
            bad_ok,
        )
    )
    # Taken at once: the failing tenant held none of the slots the others needed.
    first_waits = [
        min(runs, key=lambda r: r.created).queue_wait
        for phase in phases
        for tenant in healthy
        if (runs := phase.tenant_runs(tenant))
    ]
    worst = max((w for w in first_waits if w is not None), default=None)
    checks.append(
        (
            f"healthy tenants' first runs taken by a worker within {FIRST_PICK_SECONDS:.0f} s "
            f"of the trigger, alone and beside the failing tenant (worst {_fmt(worst).strip()})",
            None not in first_waits and worst is not None and worst <= FIRST_PICK_SECONDS,
        )
    )
    # Against the healthy tenants' mean baseline: one tenant's baseline can be short
    # when both its runs started up side by side (see tenant_slot), which is luck.
    spans = [baseline.span(t) for t in healthy]
    mean = sum(x for x in spans if x is not None) / len(spans) if None not in spans else None
    for tenant in healthy:
        before, after = baseline.span(tenant), mixed.span(tenant)
        ok = (
            mean is not None
            and after is not None
            and after <= mean * SLOWDOWN_FACTOR + SLOWDOWN_SLACK_SECONDS
        )
        checks.append(
            (
                f"{tenant} not slowed: span {_fmt(after).strip()} beside the failing tenant, "
                f"{_fmt(before).strip()} alone (mean of the healthy alone "
                f"{_fmt(mean).strip()}; allowed {SLOWDOWN_FACTOR}x + "
                f"{SLOWDOWN_SLACK_SECONDS:.0f} s)",
                ok,
            )
        )
    return checks


# -- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="bb-scale-"))
    try:
        return _scale_out(workdir)
    except (KeyboardInterrupt, SystemExit):
        print("\ninterrupted: servers stopped", file=sys.stderr)
        raise
    finally:
        if args.keep:
            print(f"\nwork folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _scale_out(workdir: Path) -> int:
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from tests.support.postgres import start_postgres
    from tests.support.prefect_server import start_prefect_server
    from tests.support.sshd import start_sshd

    from batchbridge.cli.deploy import deploy_command
    from batchbridge.deploy.names import WORK_POOL
    from batchbridge.ledger.store import LedgerStore

    print(
        f"batchbridge scale-out: {len(TENANTS)} tenants x {len(FEEDS_PER_TENANT)} feeds, "
        f"{FILES_PER_FEED} files of {ROWS_PER_FILE:,} rows per feed and phase; "
        f"{WORKERS} process workers x {RUNS_PER_WORKER} runs; {os.cpu_count()} CPUs",
        flush=True,
    )
    setup: dict[str, float] = {}

    def timed(label: str, started: float) -> None:
        setup[label] = time.perf_counter() - started

    with ExitStack() as stack:
        started = time.perf_counter()
        sshd = start_sshd(workdir / "sshd")
        stack.callback(sshd.stop)
        postgres = start_postgres(workdir / "pg")
        stack.callback(postgres.stop)
        ledger_url = postgres.create_database("ledger")
        warehouse_url = postgres.create_database("warehouse")
        postgres.create_database("prefect")
        prefect_db = f"postgresql+asyncpg://{postgres.user}@{postgres.host}:{postgres.port}/prefect"
        LedgerStore.from_url(ledger_url).engine.dispose()  # migrated once, as deployed
        timed("sshd + PostgreSQL", started)

        started = time.perf_counter()
        server = start_prefect_server(workdir / "prefect-home", database_url=prefect_db)
        stack.callback(server.stop)
        timed("Prefect server (PostgreSQL)", started)

        started = time.perf_counter()
        config_dir = workdir / "feeds"
        config_dir.mkdir()
        feeds = [
            _build_feed(tenant, suffix, workdir, sshd, config_dir)
            for tenant in TENANTS
            for suffix in FEEDS_PER_TENANT
        ]
        for feed in feeds:
            stack.callback(feed.scenario.close)
        timed("8 feeds: keys, YAML", started)

        from prefect.settings import PREFECT_API_URL, temporary_settings

        os.environ.update(server.client_env())  # for the `prefect deploy` subprocess
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: server.api_url}))
        started = time.perf_counter()
        deploy_command(
            check=False,
            apply=True,
            config_dir=config_dir,
            prefect_file=workdir / "prefect.yaml",
            project_root=REPO_ROOT,
        )
        timed("batchbridge deploy --apply", started)

        started = time.perf_counter()
        for number in range(1, WORKERS + 1):
            server.start_worker(
                WORK_POOL,
                name=f"worker-{number}",
                limit=RUNS_PER_WORKER,
                env={
                    "BATCHBRIDGE_HOME": str(REPO_ROOT),
                    "BATCHBRIDGE_CONFIG_DIR": str(config_dir),
                    "BATCHBRIDGE_DATABASE_URL": ledger_url,
                    "BATCHBRIDGE_STAGING_DIR": str(workdir / f"staging-{number}"),
                    WAREHOUSE_URL_ENV: warehouse_url,
                    "PREFECT_LOGGING_EXTRA_LOGGERS": "batchbridge",
                },
            )
        timed(f"{WORKERS} workers", started)
        print("setup: " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.items()), flush=True)

        healthy = [feed for feed in feeds if feed.tenant != FAILING_TENANT]
        for feed in healthy:
            _drop_files(feed, FILES_PER_FEED)
        baseline = _run_phase(
            "phase 1 - baseline: the three healthy tenants alone", healthy, ledger_url
        )
        for feed in feeds:
            _drop_files(feed, FILES_PER_FEED)
        mixed = _run_phase(
            f"phase 2 - all four tenants; {FAILING_TENANT} signs with a key never pinned",
            feeds,
            ledger_url,
        )
        _print_phase(baseline)
        _print_phase(mixed)
        checks = _checks(baseline, mixed)
    print("\nchecks")
    for label, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}")
    print(
        "\nqueued   = trigger -> a worker took the run (Pending)\n"
        "start-up = Pending -> Running: a new flow-run process imports Prefect and batchbridge;\n"
        "           with few CPUs it grows with the number of runs starting at once\n"
        "run      = Running -> final state; finished = seconds after the phase's first trigger"
    )
    return 0 if all(ok for _label, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
