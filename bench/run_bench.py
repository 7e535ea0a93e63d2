"""End-to-end benchmark: one big lab_results file through the nightly-feed flow, then a rerun.

`make bench` runs it. Everything is real and local: an OpenSSH sshd serves the
gpg-encrypted and -signed file, PostgreSQL holds the ledger and the warehouse, and the
`nightly-feed` Prefect flow runs against a Prefect API server started for the benchmark.

Process layout, so that each figure measures one thing:

- this process (the orchestrator) starts sshd, PostgreSQL and the Prefect server, builds
  the feed scenario, checks the results and prints the table; its own memory is not
  measured;
- a spawned *generator* child makes the synthetic rows, renders the CSV and hands it to
  gpg (encrypt + sign) through the scenario; it exits before any measurement starts;
- one spawned *pipeline* child per run imports batchbridge, calls the flow once and
  reports its own peak RSS (getrusage RUSAGE_SELF), so the peak covers the pipeline
  only: no data generation, no servers. gpg (decrypt) and the Prefect server are
  separate processes and are not part of it.

The first run loads every valid row; the second run reprocesses the same file with
force=True, which must leave the warehouse unchanged (every row "unchanged").

Exit status: 0 when both runs succeeded and every count balanced (the time and memory
targets are printed as PASS/FAIL but do not change the exit status), 1 otherwise.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchbridge.demo.scenario import LabFeedScenario

# Heavy imports (polars, prefect, batchbridge) happen inside functions: the spawned
# children re-import this module, and the pipeline child's peak RSS should hold only
# what the pipeline itself needs.

FEED = "lab_results"
FILE_DATE = date(2026, 11, 20)
SEED = 20261120
WAREHOUSE_URL_ENV = "BB_BENCH_WAREHOUSE_URL"
STAGES = ("fetch", "decrypt", "validate", "quarantine", "transform", "load", "archive")
TARGET_SECONDS = 30.0
TARGET_RSS_MIB = 2048.0
TARGET_ROWS = 1_000_000
BAD_ROW_SHARE = 0.005
# Every kind the generator can plant; each planted row fails exactly its kind's rules.
BAD_KINDS = (
    "bad_npi",
    "bad_dob",
    "invalid_dob",
    "missing_dob",
    "unmapped_code",
    "missing_last_name",
    "bad_sex",
    "bad_mrn",
    "bad_zip",
    "duplicate_id",
    "collected_after_resulted",
    "bad_collected_at",
    "non_numeric_value",
    "missing_unit",
    "bad_status",
)
CHILD_TIMEOUT_SECONDS = 30 * 60


def bad_rows_for(rows: int) -> dict[str, int]:
    """About BAD_ROW_SHARE of `rows`, spread evenly over every kind (a duplicate id costs 2)."""
    units = len(BAD_KINDS) + 1  # duplicate_id quarantines the original row as well
    per_kind = max(1, round(rows * BAD_ROW_SHARE / units))
    return dict.fromkeys(BAD_KINDS, per_kind)


# -- children -------------------------------------------------------------------------


def _maxrss_mib(who: int) -> float:
    """Peak RSS in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def _cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _generator_child(
    conn: Connection, scenario: LabFeedScenario, name: str, rows: int, bad_rows: dict[str, int]
) -> None:
    """Make the partner file: rows -> CSV bytes -> gpg (encrypt to us, sign as partner)."""
    try:
        from batchbridge.demo.lab_data import generate_lab_rows, render_lab_csv

        started = time.perf_counter()
        frame = generate_lab_rows(rows, seed=SEED, file_date=FILE_DATE, bad_rows=bad_rows)
        generated = time.perf_counter()
        data = render_lab_csv(frame)
        del frame
        rendered = time.perf_counter()
        # Synthetic rows, no real patients. Still, the plaintext never touches the disk:
        # drop_file pipes the bytes into gpg's stdin and only ciphertext is written (the
        # cost is this throwaway child holding the CSV in memory, which nothing measures).
        path = scenario.drop_file(name, data)
        encrypted = time.perf_counter()
        conn.send(
            {
                "generate_s": generated - started,
                "render_s": rendered - generated,
                "encrypt_s": encrypted - rendered,
                "plaintext_bytes": len(data),
                "ciphertext_bytes": path.stat().st_size,
                "peak_rss_mib": _maxrss_mib(resource.RUSAGE_SELF),
            }
        )
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def _pipeline_child(conn: Connection, config_dir: str, force: bool) -> None:
    """Run the nightly-feed flow once; report wall time, peak RSS and the run report."""
    try:
        started = time.perf_counter()
        from batchbridge.flows.nightly import nightly_feed

        imported = time.perf_counter()
        rss_after_imports = _maxrss_mib(resource.RUSAGE_SELF)
        cpu_before = _cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))
        flow_started = time.perf_counter()
        state = nightly_feed(feed=FEED, config_dir=config_dir, force=force, return_state=True)
        flow_seconds = time.perf_counter() - flow_started
        # Measured before anything else runs in this process.
        peak_rss = _maxrss_mib(resource.RUSAGE_SELF)
        cpu = _cpu_seconds(resource.getrusage(resource.RUSAGE_SELF)) - cpu_before
        children = resource.getrusage(resource.RUSAGE_CHILDREN)

        from batchbridge.config.settings import load_settings
        from batchbridge.ledger.store import LedgerStore

        store = LedgerStore.from_url(load_settings(config_dir).database_url)
        try:
            run = store.run_for_flow_run(str(state.state_details.flow_run_id))
            report = run.report if run is not None else None
        finally:
            store.engine.dispose()
        conn.send(
            {
                "imports_s": imported - started,
                "flow_s": flow_seconds,
                "flow_state": state.type.value,
                "flow_message": state.message,
                "peak_rss_mib": peak_rss,
                "rss_after_imports_mib": rss_after_imports,
                "cpu_s": cpu,
                "children_cpu_s": _cpu_seconds(children),
                "children_peak_rss_mib": children.ru_maxrss / 1024,
                "report": report,
            }
        )
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def _run_child(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    """Run `target(conn, *args)` in a spawned process and return what it sent."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=target, args=(sender, *args), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(CHILD_TIMEOUT_SECONDS):
            raise RuntimeError(f"{target.__name__} sent nothing in {CHILD_TIMEOUT_SECONDS} s")
        result: dict[str, Any] = receiver.recv()
        process.join(timeout=60)
    except EOFError:
        process.join(timeout=5)
        raise RuntimeError(
            f"{target.__name__} died without a result (exit code {process.exitcode})"
        ) from None
    finally:
        receiver.close()
        if process.is_alive():
            process.terminate()
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    if "error" in result:
        raise RuntimeError(f"{target.__name__} failed:\n{result['error']}")
    return result


# -- orchestration --------------------------------------------------------------------


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
            self.seconds[label] = time.perf_counter() - started


@dataclass
class RunFigures:
    """One run's figures and the problems found when checking its counts."""

    label: str
    child: dict[str, Any]
    warehouse_rows: int
    problems: list[str]

    @property
    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = self.child.get("report") or {}
        return report

    @property
    def file(self) -> dict[str, Any]:
        files: list[dict[str, Any]] = self.report.get("files") or []
        return files[0] if files else {}


def _check_run(
    figures: RunFigures, *, rows: int, quarantined: int, rerun: bool, file_name: str
) -> None:
    """Append every count that does not balance to `figures.problems`."""
    problems = figures.problems
    report, file = figures.report, figures.file
    valid = rows - quarantined
    if not report:
        problems.append("no run report in the ledger")
        return
    if report.get("status") != "succeeded":
        problems.append(f"run status {report.get('status')!r} ({report.get('error')})")
    if figures.child.get("flow_state") != "COMPLETED":
        problems.append(f"flow state {figures.child.get('flow_state')}")
    if len(report.get("files") or []) != 1 or file.get("name") != file_name:
        problems.append(f"expected exactly {file_name}, got {report.get('files')!r:.200}")
        return
    if file.get("outcome") != "reconciled" or file.get("balanced") is not True:
        problems.append(
            f"file outcome {file.get('outcome')} balanced={file.get('balanced')} "
            f"(failed at {file.get('failed_stage')}: {file.get('reason')} {file.get('message')})"
        )
    expected = {
        "rows_read": rows,
        "rows_declared": rows,
        "rows_valid": valid,
        "rows_quarantined": quarantined,
    }
    for key, want in expected.items():
        if file.get(key) != want:
            problems.append(f"{key} {file.get(key)} != {want}")
    if bool(file.get("is_rerun")) != rerun:
        problems.append(f"is_rerun {file.get('is_rerun')} != {rerun}")
    counts = (file.get("targets") or {}).get("warehouse")
    if counts is None:
        problems.append("no counts for target warehouse")
    else:
        want_counts = {
            "sent": valid,
            "inserted": 0 if rerun else valid,
            "updated": 0,
            "unchanged": valid if rerun else 0,
            "rejected": 0,
            "confirmed": valid,
        }
        for key, want in want_counts.items():
            if counts.get(key) != want:
                problems.append(f"warehouse {key} {counts.get(key)} != {want}")
    if figures.warehouse_rows != valid:
        problems.append(f"warehouse table holds {figures.warehouse_rows} rows, expected {valid}")


def _warehouse_rows(url: str, tenant: str) -> int:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        exists = conn.execute("SELECT to_regclass('lab_result')").fetchone()
        if exists is None or exists[0] is None:
            return 0
        row = conn.execute("SELECT count(*) FROM lab_result WHERE tenant = %s", (tenant,))
        found = row.fetchone()
        return int(found[0]) if found else 0


def _loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn a polite kill into an exception so every `finally` stops its server.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run one big lab_results file end to end (sshd, gpg, PostgreSQL, Prefect)."
    )
    parser.add_argument("--rows", type=int, default=TARGET_ROWS, help="rows in the file")
    parser.add_argument("--engine", choices=("gnupg", "pgpy"), default="gnupg")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    signal.signal(signal.SIGTERM, _raise_on_sigterm)

    workdir = Path(tempfile.mkdtemp(prefix="bb-bench-"))
    try:
        return _bench(args.rows, args.engine, workdir)
    except (KeyboardInterrupt, SystemExit):
        print("\ninterrupted: servers stopped", file=sys.stderr)
        raise
    finally:
        if args.keep:
            print(f"\nwork folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _bench(rows: int, engine: str, workdir: Path) -> int:
    # Settings every process (this one, the children, the Prefect server) reads from
    # the environment; set before prefect is first imported.
    os.environ["PREFECT_HOME"] = str(workdir / "prefect-home")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["BATCHBRIDGE_STAGING_DIR"] = str(workdir / "staging")

    from tests.support.feed_scenarios import postgres_target
    from tests.support.postgres import start_postgres
    from tests.support.sshd import start_sshd

    from batchbridge.demo.lab_data import expected_quarantined
    from batchbridge.demo.scenario import (
        build_lab_scenario,
        lab_file_name,
    )
    from batchbridge.ledger.store import LedgerStore

    print(
        f"batchbridge bench: {rows:,} rows, engine {engine}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load avg {_loadavg()} (1/5/15 min) at start",
        flush=True,
    )
    bad_rows = bad_rows_for(rows)
    quarantined = expected_quarantined(bad_rows)
    setup = Setup()
    with ExitStack() as stack:
        with setup.timed("sshd start"):
            sshd = start_sshd(workdir / "sshd")
            stack.callback(sshd.stop)
        with setup.timed("PostgreSQL start"):
            postgres = start_postgres(workdir / "pg")
            stack.callback(postgres.stop)
            warehouse_url = postgres.create_database("warehouse")
            ledger_url = postgres.create_database("ledger")
        os.environ[WAREHOUSE_URL_ENV] = warehouse_url
        os.environ["BATCHBRIDGE_DATABASE_URL"] = ledger_url
        with setup.timed("ledger migration"):
            # Done once up front, as a deployed ledger would be; not part of a run.
            LedgerStore.from_url(ledger_url).engine.dispose()
        with setup.timed("scenario (keys, YAML)"):
            endpoint = sshd.endpoint(sshd.root / "outbound")
            scenario = build_lab_scenario(
                workdir / "feed",
                endpoint,
                targets=[postgres_target(WAREHOUSE_URL_ENV)],
                engine=engine,
            )
            stack.callback(scenario.close)
        name = lab_file_name(FILE_DATE)
        with setup.timed("data generation (child)"):
            generated = _run_child(_generator_child, scenario, name, rows, bad_rows)
        with setup.timed("Prefect server start"):
            from prefect.server.api.server import SubprocessASGIServer

            prefect_server = SubprocessASGIServer()
            stack.callback(prefect_server.stop)
            prefect_server.start(timeout=180)
            os.environ["PREFECT_API_URL"] = prefect_server.api_url

        runs: list[RunFigures] = []
        for label, force in (("first run", False), ("rerun (force)", True)):
            print(f"running: {label} ...", flush=True)
            child = _run_child(_pipeline_child, str(scenario.config_dir), force)
            figures = RunFigures(
                label=label,
                child=child,
                warehouse_rows=_warehouse_rows(warehouse_url, scenario.tenant),
                problems=[],
            )
            _check_run(figures, rows=rows, quarantined=quarantined, rerun=force, file_name=name)
            runs.append(figures)
            if figures.report.get("status") != "succeeded":
                break  # a rerun of a failed file would measure something else

        _print_table(rows, engine, setup, generated, runs)
    problems = [f"{run.label}: {problem}" for run in runs for problem in run.problems]
    if len(runs) < 2:
        problems.append("the rerun was skipped because the first run failed")
    if problems:
        print("\nCOUNT CHECKS FAILED:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("\ncount checks: all balanced (read = valid + quarantined = trailer; target counts)")
    return 0


# -- the table ------------------------------------------------------------------------


def _fmt_seconds(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _print_table(
    rows: int,
    engine: str,
    setup: Setup,
    generated: dict[str, Any],
    runs: list[RunFigures],
) -> None:
    from batchbridge.demo.lab_data import expected_quarantined

    mb = 1024 * 1024
    print("\nsetup (not part of the measured runs)")
    for label, seconds in setup.seconds.items():
        print(f"  {label:<28} {seconds:8.2f} s")
    print(
        f"    generator child: rows {generated['generate_s']:.2f} s, CSV "
        f"{generated['render_s']:.2f} s, gpg encrypt+sign {generated['encrypt_s']:.2f} s, "
        f"peak RSS {generated['peak_rss_mib']:,.0f} MiB"
    )
    print(
        f"\nfile: {rows:,} rows ({expected_quarantined(bad_rows_for(rows)):,} planted bad rows), "
        f"ciphertext {generated['ciphertext_bytes'] / mb:,.1f} MiB, plaintext "
        f"{generated['plaintext_bytes'] / mb:,.1f} MiB (never written to disk)"
    )

    width = 16
    header = f"\n{'':<40}" + "".join(f"{run.label:>{width}}" for run in runs)
    print(header)

    def line(label: str, values: list[str]) -> None:
        print(f"{label:<40}" + "".join(f"{value:>{width}}" for value in values))

    line("stage seconds", [""] * len(runs))
    for stage in STAGES:
        line(
            f"  {stage}",
            [_fmt_seconds(run.file.get("stage_seconds", {}).get(stage)) for run in runs],
        )
    line(
        "  sum of stages",
        [_fmt_seconds(sum((run.file.get("stage_seconds") or {}).values())) for run in runs],
    )
    run_feed_s = [run.report.get("seconds") for run in runs]
    line("run_feed (ledger, SFTP list, ...)", [_fmt_seconds(s) for s in run_feed_s])
    line(
        "Prefect overhead (flow - run_feed)",
        [
            _fmt_seconds(run.child["flow_s"] - s) if isinstance(s, int | float) else "-"
            for run, s in zip(runs, run_feed_s, strict=True)
        ],
    )
    line("END TO END (flow call) s", [_fmt_seconds(run.child["flow_s"]) for run in runs])
    line("rows/s (end to end)", [f"{rows / run.child['flow_s']:,.0f}" for run in runs])
    line("PEAK RSS pipeline process MiB", [f"{run.child['peak_rss_mib']:,.0f}" for run in runs])
    line("  RSS after imports MiB", [f"{run.child['rss_after_imports_mib']:,.0f}" for run in runs])
    line("  CPU s in the process", [_fmt_seconds(run.child["cpu_s"]) for run in runs])
    line(
        "  CPU s in its children (gpg…)",
        [_fmt_seconds(run.child["children_cpu_s"]) for run in runs],
    )
    line("  python start + imports s", [_fmt_seconds(run.child["imports_s"]) for run in runs])
    line("rows read", [str(run.file.get("rows_read", "-")) for run in runs])
    line("rows valid", [str(run.file.get("rows_valid", "-")) for run in runs])
    line("rows quarantined", [str(run.file.get("rows_quarantined", "-")) for run in runs])

    def target(run: RunFigures, key: str) -> str:
        counts = (run.file.get("targets") or {}).get("warehouse") or {}
        return str(counts.get(key, "-"))

    for key in ("inserted", "updated", "unchanged", "confirmed"):
        line(f"warehouse {key}", [target(run, key) for run in runs])
    line("warehouse table rows", [str(run.warehouse_rows) for run in runs])
    line("balanced", ["yes" if run.file.get("balanced") else "NO" for run in runs])
    line("counts checked", ["ok" if not run.problems else "FAILED" for run in runs])

    note = "" if rows == TARGET_ROWS else " (set for 1M)"
    line(
        f"target end to end <= {TARGET_SECONDS:.0f} s{note}",
        [_verdict(run.child["flow_s"] <= TARGET_SECONDS) for run in runs],
    )
    line(
        f"target peak RSS <= {TARGET_RSS_MIB:,.0f} MiB",
        [_verdict(run.child["peak_rss_mib"] <= TARGET_RSS_MIB) for run in runs],
    )
    print(f"\nengine {engine}; load avg {_loadavg()} (1/5/15 min) at the end")


if __name__ == "__main__":
    sys.exit(main())
