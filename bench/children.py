"""The bench's spawned children: the generator, the pipeline run, the validate/transform floors.

Each runs in a process of its own (multiprocessing "spawn": a fresh interpreter) so that
each figure measures one thing:

- the *generator* makes a partner file (rows -> CSV -> gpg) and exits before anything
  is measured;
- the *pipeline* child imports batchbridge, calls the nightly-feed flow once and reports
  its own peak RSS (getrusage RUSAGE_SELF): the pipeline only, no data generation, no
  servers; gpg (decrypt) and the Prefect server are separate processes, not part of it;
- the *stage floors* child parses the whole file and times the validate and transform
  floors (bench.stage_floors), keeping that frame out of the orchestrator.

Heavy imports (polars, prefect, batchbridge) happen inside the functions: a spawned child
re-imports this module, and the pipeline child's peak RSS should hold only what the
pipeline itself needs.
"""

from __future__ import annotations

import multiprocessing
import resource
import threading
import time
import traceback
from collections.abc import Callable
from datetime import date
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.generate import LabFileSpec

    from batchbridge.demo.scenario import LabFeedScenario

CHILD_TIMEOUT_SECONDS = 90 * 60  # a 10M-row run on a busy 2-core machine


def maxrss_mib(who: int) -> float:
    """Peak RSS in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def _cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def generator_child(conn: Connection, scenario: LabFeedScenario, specs: list[LabFileSpec]) -> None:
    """Make each spec's partner file in pieces (bench.generate); report seconds and sizes."""
    try:
        from bench.generate import write_encrypted_lab_file

        total: dict[str, float] = {}
        for spec in specs:
            for key, value in write_encrypted_lab_file(scenario, spec).items():
                total[key] = total.get(key, 0) + value
        conn.send({**total, "peak_rss_mib": maxrss_mib(resource.RUSAGE_SELF)})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def pipeline_child(conn: Connection, config_dir: str, feed: str, force: bool) -> None:
    """Run the nightly-feed flow once; report wall time, peak RSS and the run report."""
    try:
        started = time.perf_counter()
        from batchbridge.flows.nightly import nightly_feed

        imported = time.perf_counter()
        rss_after_imports = maxrss_mib(resource.RUSAGE_SELF)
        cpu_before = _cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))
        flow_started = time.perf_counter()
        state = nightly_feed(feed=feed, config_dir=config_dir, force=force, return_state=True)
        flow_seconds = time.perf_counter() - flow_started
        # Measured before anything else runs in this process.
        peak_rss = maxrss_mib(resource.RUSAGE_SELF)
        cpu = _cpu_seconds(resource.getrusage(resource.RUSAGE_SELF)) - cpu_before
        children = resource.getrusage(resource.RUSAGE_CHILDREN)

        from batchbridge.config.settings import load_settings
        from batchbridge.ledger.store import LedgerStore

        flow_run_id = str(state.state_details.flow_run_id)
        store = LedgerStore.from_url(load_settings(config_dir).database_url)
        try:
            run = store.run_for_flow_run(flow_run_id)
            report = run.report if run is not None else None
        finally:
            store.engine.dispose()
        conn.send(
            {
                "imports_s": imported - started,
                "flow_s": flow_seconds,
                "flow_state": state.type.value,
                "flow_message": state.message,
                "flow_run_id": flow_run_id,
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


def stage_floors_child(
    conn: Connection,
    config_dir: str,
    feed: str,
    ciphertext: str,
    secrets: str,
    file_date: date,
    runs: int,
) -> None:
    """Time the validate and transform floors on the whole file (bench.stage_floors)."""
    try:
        from bench.stage_floors import measure_stage_floors

        figures = measure_stage_floors(
            Path(config_dir), feed, Path(ciphertext), Path(secrets), file_date, runs
        )
        conn.send({**figures, "peak_rss_mib": maxrss_mib(resource.RUSAGE_SELF)})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


class RssSampler:
    """The RSS of a process every `interval` seconds, from /proc, until stopped (Linux)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.samples: list[tuple[float, float]] = []  # (time.time(), MiB)
        self._path = Path(f"/proc/{pid}/status")
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                status = self._path.read_text()
            except OSError:
                return  # the process is gone
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    self.samples.append((time.time(), int(line.split()[1]) / 1024))

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join()
        return self.samples


def run_child(target: Callable[..., None], *args: Any, sample_rss: bool = False) -> dict[str, Any]:
    """Run `target(conn, *args)` in a spawned process and return what it sent.

    With `sample_rss`, the result also holds "rss_samples": (time.time(), MiB) pairs.
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=target, args=(sender, *args), daemon=True)
    process.start()
    sender.close()
    sampler = RssSampler(process.pid) if sample_rss and process.pid else None
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
        samples = sampler.stop() if sampler is not None else []
        if process.is_alive():
            process.terminate()
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    if "error" in result:
        raise RuntimeError(f"{target.__name__} failed:\n{result['error']}")
    if sampler is not None:
        result["rss_samples"] = samples
    return result
