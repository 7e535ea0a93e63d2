"""Parallel files: one run of 8 files x 100k rows with `parallel_files: 1`, then with 4.

    PYTHONPATH=. .venv/bin/python bench/run_bench.py parallel [--rows N] [--files 8] [--workers 4]

The files are made once (bench.generate; record ids never shared between files); each
setting then gets a fresh ledger and warehouse, the feed YAML's `parallel_files` set,
and one first run in a pipeline child that processes every file (Prefect's
ThreadPoolTaskRunner when above 1). Prints both runs side by side and the ratio of
their end-to-end times (target <= 0.6). The ratio is printed PASS/FAIL; the exit status
is 1 only when a count did not balance.
"""

from __future__ import annotations

from pathlib import Path

from bench.checks import FileExpectation, RunFigures
from bench.children import generator_child, run_child
from bench.environment import Setup, bench_environment
from bench.generate import FILE_DATE, SEED, LabFileSpec
from bench.table import (
    Verdict,
    loadavg,
    print_file,
    print_header,
    print_runs,
    print_setup,
    print_verdicts,
)

TARGET_RATIO = 0.6


def parallel_case(rows: int, files: int, workers: int, engine: str, workdir: Path) -> int:
    """`files` files of `rows` rows, processed one at a time then `workers` at a time."""
    from batchbridge.demo.scenario import lab_file_name

    print_header(f"{files} files x {rows:,} rows, parallel_files 1 vs {workers}", engine)
    specs = [
        LabFileSpec(lab_file_name(FILE_DATE, seq), rows, SEED + seq, FILE_DATE, (seq - 1) * rows)
        for seq in range(1, files + 1)
    ]
    expected = [FileExpectation(spec.name, rows, spec.quarantined) for spec in specs]
    setup = Setup()
    runs: list[RunFigures] = []
    with bench_environment(workdir, engine, setup) as env:
        with setup.timed("data generation (child)"):
            generated = run_child(generator_child, env.scenario, specs)
        for count in (1, workers):
            env.fresh_databases(f"parallel_{count}")
            env.set_parallel_files(count)
            runs.append(env.run_pipeline(f"parallel {count}", expected, force=False))
    print_setup(setup, [generated])
    print_file(
        rows,
        specs[0].quarantined,
        {key: generated[key] / files for key in ("ciphertext_bytes", "plaintext_bytes")},
        files=files,
    )
    print_runs(runs)

    one, many = runs
    time_ratio = many.flow_s / one.flow_s
    balanced = not one.problems and not many.problems
    print_verdicts(
        [
            Verdict(
                time_ratio <= TARGET_RATIO,
                f"time parallel_files {workers} / 1 <= {TARGET_RATIO:g}",
                f"{time_ratio:.2f} ({many.flow_s:.1f} s / {one.flow_s:.1f} s)",
            ),
            Verdict(
                balanced,
                "counts balance, every file of both runs",
                f"{files} files each" if balanced else "see below",
            ),
        ],
        "" if (files, rows, workers) == (8, 100_000, 4) else " (target set for 8 x 100k, 4)",
    )
    print(f"\nengine {engine}; load avg {loadavg()} (1/5/15 min) at the end")
    if not balanced:
        print("\nCOUNT CHECKS FAILED:")
        for run in runs:
            for problem in run.problems:
                print(f"  - {run.label}: {problem}")
        return 1
    return 0
