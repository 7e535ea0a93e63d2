"""Kill -9 at named points of a run or a release, rerun, and prove nothing was lost or doubled.

Each cycle: a fresh database, two encrypted partner files (planted bad rows and canary
patients) on a real sshd, `batchbridge run` in a subprocess with BATCHBRIDGE_CRASH_AT set
(it must die by SIGKILL), then a rerun without it. The result must equal a clean run of
the same files: target rows by natural key and content, quarantine rows by row number,
ledger states and counts, the loads of the reconciling run, the remote folders, and a
report that balances; no canary name anywhere outside the encrypted quarantine. Release
cycles do the same for `batchbridge quarantine release` after a steward's fix.

Quick (in `make test`): a few points on one seed. Full (`make test-reliability`): every
point, at several arrivals (first file, second file, second target...), over several
seeds: 200+ kill/rerun cycles.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import prefect.settings
import pytest

from batchbridge.crashpoints import (
    CRASH_AT_ENV,
    CRASH_POINTS,
    CRASH_TESTING_ENV,
    CrashSpec,
    parse_crash_spec,
)
from tests.reliability.conftest import FULL, Figures
from tests.reliability.crash_helpers import (
    CliRun,
    CrashLab,
    Cycle,
    Snapshot,
    Verdict,
    canary_hits,
    check_against,
    check_final_report,
    read_trace,
)
from tests.support.postgres import PostgresServer
from tests.support.sshd import SshdServer

RELEASE_ONLY = ("mid_release", "mid_release_settle", "release_before_report")
# A nightly load upserts from the stage its PostgreSQL targets filled while the file was
# read (before_early_copy, mid_early_copy); COPY from the chunks is what a release does,
# and a nightly load only if its early stage failed, which a clean run never does.
CHUNK_COPY_ONLY = ("before_copy", "mid_copy")
NIGHTLY_POINTS = tuple(p for p in CRASH_POINTS if p not in RELEASE_ONLY + CHUNK_COPY_ONLY)
# Target and ledger points a release passes through too.
RELEASE_SHARED = (
    "before_copy",
    "mid_copy",
    "after_copy_before_upsert",
    "after_upsert_before_commit",
    "after_target_commit_before_ledger",
    "mid_load_record",
)
RELEASE_POINTS = RELEASE_ONLY + RELEASE_SHARED
# Reached once per chunk read: how many chunks depends on pipe timing or file size, at
# least one a file.
VARIABLE_ARRIVALS = frozenset(
    {"mid_decrypt", "mid_download", "after_parse", "mid_stream", "mid_early_copy"}
)
# Kill, then kill the rerun too (at a point every unfinished file reaches), then rerun.
CHAINS = (
    ("mid_early_copy@2", "mid_ledger_advance@2"),
    ("after_target_commit_before_ledger@3", "after_upsert_before_commit@1"),
    ("mid_quarantine_write@2", "after_load_ledger@1"),
)

# Quick subset: mid-stream, mid-transaction in the target, committed-but-unrecorded on the second
# target of the first file, reconciled-but-not-archived, and mid-release.
QUICK_NIGHTLY = (
    "mid_stream",  # a file part streamed (parsed, validated, transformed): nothing recorded
    "mid_early_copy",  # a chunk in a target's stage, the file still streaming
    "after_target_commit_before_ledger@2",
    "after_reconcile_before_archive",
)
QUICK_RELEASE = ("mid_release",)
FULL_SEEDS = (1, 2, 3)
SRC = Path(__file__).resolve().parents[2] / "src" / "batchbridge"


# -- crash_point itself -------------------------------------------------------------------


def test_crash_spec_parsing() -> None:
    assert parse_crash_spec(None) is None
    assert parse_crash_spec("  ") is None
    assert parse_crash_spec("mid_copy") == CrashSpec("mid_copy", 1)
    assert parse_crash_spec("mid_copy@3") == CrashSpec("mid_copy", 3)
    for bad in ("@2", "mid_copy@0", "mid_copy@x"):
        with pytest.raises(ValueError):
            parse_crash_spec(bad)


def test_every_point_is_placed_exactly_once() -> None:
    placed = Counter(
        match
        for path in SRC.rglob("*.py")
        for match in re.findall(r'crash_point\("([a-z_]+)"', path.read_text(encoding="utf-8"))
    )
    assert set(placed) == set(CRASH_POINTS)
    assert all(count == 1 for count in placed.values()), placed
    assert len(CRASH_POINTS) >= 20


def _probe(env: dict[str, str]) -> tuple[int, int]:
    """Exit code and lines printed by a process passing the point 'probe' three times."""
    code = (
        "from batchbridge.crashpoints import crash_point\n"
        "for i in range(3):\n"
        "    crash_point('probe')\n"
        "    print(i, flush=True)\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("BATCHBRIDGE_CRASH")}
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, check=False
    )
    return proc.returncode, len(proc.stdout.split())


def test_crash_point_kills_only_when_switched_on() -> None:
    # Without the testing switch the variable is ignored: the loop completes.
    assert _probe({CRASH_AT_ENV: "probe"}) == (0, 3)
    assert _probe({CRASH_TESTING_ENV: "1"}) == (0, 3)
    assert _probe({CRASH_TESTING_ENV: "1", CRASH_AT_ENV: "other"}) == (0, 3)
    # Switched on: SIGKILL on the named arrival, nothing after it.
    assert _probe({CRASH_TESTING_ENV: "1", CRASH_AT_ENV: "probe"}) == (-9, 0)
    assert _probe({CRASH_TESTING_ENV: "1", CRASH_AT_ENV: "probe@3"}) == (-9, 2)


def test_inert_crash_point_costs_nothing_measurable() -> None:
    if os.environ.get(CRASH_TESTING_ENV):
        pytest.skip("this pytest process itself has the crash switch on")
    from batchbridge.crashpoints import crash_point

    started = time.perf_counter()
    for _ in range(100_000):
        crash_point("mid_copy")
    # ~5 ms on a slow box; a run passes each point a handful of times per file.
    assert time.perf_counter() - started < 0.5


# -- kill and rerun -----------------------------------------------------------------------


@dataclass
class Tally:
    """What cycles found, summed."""

    points: set[str] = field(default_factory=set)
    cycles: int = 0
    lost: int = 0
    doubled: int = 0
    unhandled: int = 0
    canaries: int = 0
    problems: list[str] = field(default_factory=list)
    slowest: float = 0.0

    def add(self, other: Tally) -> None:
        self.points |= other.points
        self.cycles += other.cycles
        self.lost += other.lost
        self.doubled += other.doubled
        self.unhandled += other.unhandled
        self.canaries += other.canaries
        self.problems += other.problems
        self.slowest = max(self.slowest, other.slowest)


@dataclass
class References:
    """Clean runs of a lab's files: after the nightly run, after a release; their traces."""

    nightly: Snapshot
    release: Snapshot
    nightly_trace: Counter[str]
    release_trace: Counter[str]
    base_db: str  # the database after the clean nightly run: template of release cycles


class LabRunner:
    """A lab's clean references, then any of its cycles (each in its own database and inbox)."""

    def __init__(self, lab: CrashLab) -> None:
        self.lab = lab
        self.names = [spec.name for spec in lab.files]
        self._ref: References | None = None

    @property
    def ref(self) -> References:
        assert self._ref is not None, "references() first"
        return self._ref

    def references(self) -> Tally:
        """Clean nightly run (traced) and clean release (traced) of the lab's files."""
        lab = self.lab
        trace = lab.root / "nightly.trace"
        base = lab.new_cycle("base")
        run = base.nightly(trace=trace)
        assert run.returncode == 0, run.stderr[-3000:]
        nightly = base.snapshot()
        self._check_reference(nightly)
        # Reference release on a copy, so the base stays the template of release cycles.
        ref = lab.new_cycle("relref", template=base.db_name)
        release_trace = lab.root / "release.trace"
        released = ref.release(trace=release_trace)
        assert released.returncode == 0, released.stderr[-3000:]
        after = ref.snapshot()
        unmapped = sum(spec.bad_rows["unmapped_code"] for spec in lab.files)
        statuses = Counter(
            row["status"] for rows in after.quarantine.values() for row in rows.values()
        )
        assert statuses["released"] == unmapped
        ref.drop()
        self._ref = References(
            nightly=nightly,
            release=after,
            nightly_trace=read_trace(trace),
            release_trace=read_trace(release_trace),
            base_db=base.db_name,
        )
        # The clean runs pass the checks the crashed ones must pass (balance, audit, PHI).
        verdict = check_against(after, after, release=True, remote=False)
        hits = canary_hits(base, nightly) + canary_hits(ref, after)
        tally = Tally(canaries=len(hits), problems=verdict.problems)
        if hits:
            tally.problems.append(f"seed {lab.seed}: canary in a clean run: {hits}")
        missing = [p for p in NIGHTLY_POINTS if not self.ref.nightly_trace[p]]
        missing += [p for p in RELEASE_POINTS if not self.ref.release_trace[p]]
        if missing:
            tally.problems.append(f"seed {lab.seed}: points a clean run never reaches: {missing}")
        return tally

    def _check_reference(self, snap: Snapshot) -> None:
        """The clean run itself matches what the generator planted."""
        for spec in self.lab.files:
            entry = snap.file(spec.name)
            assert entry is not None and entry["state"] == "reconciled"
            assert entry["rows_read"] == spec.rows
            assert entry["rows_quarantined"] == spec.quarantined
            assert len(snap.quarantine[spec.name]) == spec.quarantined
        valid = sum(spec.rows - spec.quarantined for spec in self.lab.files)
        assert all(len(rows) == valid for rows in snap.target.values())
        assert snap.processed == sorted(self.names) and snap.inbox == []

    def plan(self, *, nightly: list[str] | None, release: list[str] | None) -> list[Job]:
        """The cycles to run: given points, or (None) every point at chosen arrivals."""
        seed = self.lab.seed
        chains: list[tuple[str, str]] = []
        if nightly is None:
            nightly = [
                spec
                for i, point in enumerate(NIGHTLY_POINTS)
                for spec in _arrivals(point, self._reached(point), seed + i)
            ]
            chains = [CHAINS[seed % len(CHAINS)]]
        if release is None:
            # Release-only points at two arrivals; the target points (already killed in
            # nightly cycles) at one, a different one per seed.
            release = [
                spec
                for i, point in enumerate(RELEASE_POINTS)
                for spec in _arrivals(
                    point, self.ref.release_trace[point], seed + i, two=point in RELEASE_ONLY
                )
            ]
        return (
            [Job(self, "nightly", (p,)) for p in nightly]
            + [Job(self, "nightly", chain) for chain in chains]
            + [Job(self, "release", (p,)) for p in release]
        )

    def _reached(self, point: str) -> int:
        reached = self.ref.nightly_trace[point]
        return min(reached, len(self.names)) if point in VARIABLE_ARRIVALS else reached

    def leftover_check(self) -> Tally:
        """Files reconciled but left in the inbox: the identical one is archived, a look-alike
        (same name and size, other bytes) stays and is reported, the archived copy untouched.
        """
        cycle = self.lab.new_cycle("left", template=self.ref.base_db)
        try:
            first, second = self.names
            processed = cycle.drop_dir / "processed"
            processed.mkdir()
            original = (self.lab.ciphertexts / first).read_bytes()
            (processed / first).write_bytes(original)
            middle = len(original) // 2
            flipped = bytes([original[middle] ^ 0xFF])
            (cycle.drop_dir / first).write_bytes(
                original[:middle] + flipped + original[middle + 1 :]
            )
            (cycle.drop_dir / second).write_bytes((self.lab.ciphertexts / second).read_bytes())
            run = cycle.nightly()
            report = run.json()
            notes = report.get("notes", []) if isinstance(report, dict) else []
            snap = cycle.snapshot()
            problems = []
            if run.returncode != 0 or not isinstance(report, dict) or report["files"]:
                problems.append(f"exit {run.returncode}, report {report}")
            if snap.inbox != [first] or snap.processed != sorted(self.names):
                problems.append(f"inbox {snap.inbox}, processed {snap.processed}")
            if (processed / first).read_bytes() != original:
                problems.append("the archived copy was overwritten")
            if not any(n.startswith(f"{first}: same name and size") for n in notes) or not any(
                n.startswith(f"{second}: reconciled by an earlier run") for n in notes
            ):
                problems.append(f"notes {notes}")
            return Tally(problems=[f"seed {self.lab.seed} leftover: {p}" for p in problems])
        finally:
            cycle.drop()

    def nightly_cycle(self, points: tuple[str, ...]) -> Tally:
        """Kill `batchbridge run` at each point in turn (a kill per run), rerun, compare."""
        cycle = self.lab.new_cycle("n")
        try:
            crashed = [cycle.nightly(crash_at=point) for point in points]
            rerun = cycle.nightly()
            snap = cycle.snapshot()
            verdict = check_against(snap, self.ref.nightly, release=False)
            check_final_report(rerun.json(), self.names, verdict)
            return self._tally(points, cycle, crashed, rerun, snap, verdict)
        finally:
            cycle.drop()

    def release_cycle(self, points: tuple[str, ...]) -> Tally:
        """Kill `quarantine release` at `point`, release again, compare with a clean release."""
        cycle = self.lab.new_cycle("r", template=self.ref.base_db)
        try:
            crashed = [cycle.release(crash_at=point) for point in points]
            again = cycle.release()
            snap = cycle.snapshot()
            verdict = check_against(snap, self.ref.release, release=True, remote=False)
            report = again.json()
            if not isinstance(report, dict) or report["totals"]["errors"]:
                verdict.problem(f"re-release report: {report}")
            labels = tuple(f"release:{point}" for point in points)
            return self._tally(labels, cycle, crashed, again, snap, verdict)
        finally:
            cycle.drop()

    def _tally(
        self,
        labels: tuple[str, ...],
        cycle: Cycle,
        crashed: list[CliRun],
        rerun: CliRun,
        snap: Snapshot,
        verdict: Verdict,
    ) -> Tally:
        # A chain counts a cycle per kill: each killed run was the rerun of the one before.
        tally = Tally(
            # Distinct points in the code: release:mid_copy is the same point as mid_copy.
            points={label.removeprefix("release:").split("@")[0] for label in labels},
            cycles=len(labels),
            slowest=rerun.seconds,
        )
        for label, run in zip(labels, crashed, strict=True):
            if not run.killed:
                verdict.problem(f"{label} not killed: exit {run.returncode}")
            if run.has_traceback:
                tally.unhandled += 1
                verdict.problem(f"{label}: the killed run printed a traceback before dying")
        if rerun.returncode != 0 or rerun.has_traceback:
            tally.unhandled += 1
            verdict.problem(f"rerun exit {rerun.returncode}: {rerun.stderr[-1500:]}")
        hits = canary_hits(cycle, snap)
        tally.canaries = len(hits)
        if hits:
            verdict.problem(f"canary found in {hits}")
        tally.lost, tally.doubled = verdict.lost, verdict.doubled
        label = " then ".join(labels)
        tally.problems = [f"seed {self.lab.seed} {label}: {p}" for p in verdict.problems]
        return tally


@dataclass(frozen=True)
class Job:
    """One kill/rerun cycle to run."""

    runner: LabRunner
    kind: str  # "nightly" or "release"
    points: tuple[str, ...]  # one kill per run, in order; then the clean rerun

    def __call__(self) -> Tally:
        if self.kind == "nightly":
            return self.runner.nightly_cycle(self.points)
        return self.runner.release_cycle(self.points)


def _arrivals(point: str, reached: int, salt: int, *, two: bool = True) -> list[str]:
    """One or two of the point's arrivals in a clean run (which file, which target)."""
    if reached <= 1:
        return [point]
    first = salt % reached
    second = (first + max(1, reached // 2)) % reached
    chosen = sorted({first, second}) if two else [first]
    return [f"{point}@{n + 1}" for n in chosen]


@pytest.fixture(scope="module")
def prefect_api_url(prefect_api: None) -> str:
    return str(prefect.settings.PREFECT_API_URL.value())


@pytest.fixture
def labs(
    tmp_path: Path,
    sshd_server: SshdServer,
    postgres_server: PostgresServer,
    prefect_api_url: str,
) -> Iterator[list[CrashLab]]:
    seeds = FULL_SEEDS if FULL else (0,)

    def build(seed: int) -> CrashLab:
        root = tmp_path / f"lab{seed}"
        root.mkdir()
        return CrashLab(
            root,
            sshd=sshd_server,
            postgres=postgres_server,
            prefect_api_url=prefect_api_url,
            seed=seed,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        built = list(pool.map(build, seeds))
    yield built


def _call(job: Callable[[], Tally]) -> Tally:
    # One broken cycle (a timeout, a lost connection) is reported with the others, not
    # instead of them.
    try:
        return job()
    except Exception as exc:
        return Tally(problems=[f"{job}: {type(exc).__name__}: {str(exc)[:1500]}"])


@pytest.mark.integration
def test_kill_and_rerun_loses_and_doubles_nothing(
    labs: list[CrashLab], reliability_figures: Figures
) -> None:
    started = time.perf_counter()
    runners = [LabRunner(lab) for lab in labs]
    total = Tally()
    # Two subprocesses at a time (2 cores); every cycle has its own database and inbox.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for tally in pool.map(_call, [r.references for r in runners]):
            total.add(tally)
        jobs: list[Callable[[], Tally]] = [runners[0].leftover_check]
        for runner in runners:
            if FULL:
                jobs += runner.plan(nightly=None, release=None)
            else:
                jobs += runner.plan(nightly=list(QUICK_NIGHTLY), release=list(QUICK_RELEASE))
        for tally in pool.map(_call, jobs):
            total.add(tally)
    for runner in runners:
        runner.lab.postgres.drop_database(runner.ref.base_db)
    reliability_figures.add("kill_points", len(total.points))
    reliability_figures.add("kill_cycles", total.cycles)
    reliability_figures.add("rows_lost", total.lost)
    reliability_figures.add("rows_doubled", total.doubled)
    reliability_figures.add("unhandled_errors", total.unhandled)
    reliability_figures.add("canary_hits", total.canaries)
    elapsed = time.perf_counter() - started
    print(f"crash cycles: {total.cycles} in {elapsed:.0f}s, slowest rerun {total.slowest:.1f}s")
    assert not total.problems, "\n".join(total.problems[:60])
    assert total.lost == total.doubled == total.unhandled == total.canaries == 0
    if FULL:
        assert total.cycles >= 200
