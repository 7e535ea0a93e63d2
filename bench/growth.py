"""Growth: the same flow on N and factor x N rows (1M and 10M), time ratio and peak RSS.

    PYTHONPATH=. .venv/bin/python bench/run_bench.py growth [--rows N] [--factor F]

Each size gets a fresh ledger and warehouse and its own file, made in pieces
(bench.generate: 10M rows are ~1.5 GB of plaintext, never held whole), and one first
run in a pipeline child. Streaming should make time grow with the rows and memory not
at all: the targets are time(F x N) / time(N) <= 1.05 x F (10.5 for 10x) and a peak RSS
of the bigger run <= 1 GB. Both are printed PASS/FAIL; the exit status is 1 only when a
count did not balance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.checks import FileExpectation, RunFigures
from bench.children import generator_child, run_child
from bench.environment import Setup, bench_environment
from bench.generate import FILE_DATE, SEED, LabFileSpec
from bench.table import Verdict, loadavg, mb, print_header, print_runs, print_setup, print_verdicts

TIME_SLACK = 1.05  # time may grow 5% more than the rows
BIG_RSS_MAX_MB = 1000.0


def growth_case(rows: int, factor: int, engine: str, workdir: Path) -> int:
    """Run `rows` and `factor * rows` rows, one first run each; print the growth verdicts."""
    from batchbridge.demo.scenario import lab_file_name

    sizes = [rows, rows * factor]
    print_header(f"growth, {sizes[0]:,} then {sizes[1]:,} rows", engine)
    setup = Setup()
    runs: list[RunFigures] = []
    generated: list[dict[str, Any]] = []
    with bench_environment(workdir, engine, setup) as env:
        for size in sizes:
            spec = LabFileSpec(lab_file_name(FILE_DATE), size, SEED, FILE_DATE)
            env.fresh_databases(f"growth_{size}")
            with setup.timed("data generation (child)"):
                generated.append(run_child(generator_child, env.scenario, [spec]))
            expected = [FileExpectation(spec.name, size, spec.quarantined)]
            runs.append(env.run_pipeline(f"{size:,} rows", expected, force=False))
            (env.drop_dir / spec.name).unlink()  # the next size is a file of its own
    print_setup(setup, generated)
    print_runs(runs)

    small, big = runs
    time_ratio = big.flow_s / small.flow_s
    limit = TIME_SLACK * factor
    balanced = not small.problems and not big.problems
    print_verdicts(
        [
            Verdict(
                time_ratio <= limit,
                f"time {sizes[1]:,} / {sizes[0]:,} rows <= {limit:g}",
                f"{time_ratio:.2f} ({big.flow_s:.1f} s / {small.flow_s:.1f} s)",
            ),
            Verdict(
                mb(big.peak_rss_mib) <= BIG_RSS_MAX_MB,
                f"peak RSS at {sizes[1]:,} rows <= {BIG_RSS_MAX_MB:,.0f} MB",
                f"{mb(big.peak_rss_mib):,.0f} MB ({mb(small.peak_rss_mib):,.0f} MB "
                f"at {sizes[0]:,} rows)",
            ),
            Verdict(
                balanced,
                "counts balance (read = valid + quarantined = trailer)",
                "both runs" if balanced else "see below",
            ),
        ],
        "" if sizes == [1_000_000, 10_000_000] else " (targets set for 1M and 10M rows)",
    )
    print(f"\nengine {engine}; load avg {loadavg()} (1/5/15 min) at the end")
    if not balanced:
        print("\nCOUNT CHECKS FAILED:")
        for run in runs:
            for problem in run.problems:
                print(f"  - {run.label}: {problem}")
        return 1
    return 0
