"""The bench's printed report: setup, the file, runs side by side, floors, ratios and verdicts."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.checks import RunFigures
    from bench.environment import Setup
    from bench.floors import Floors

STAGES = ("fetch", "decrypt", "parse", "validate", "quarantine", "transform", "load", "archive")
LABEL_WIDTH = 46
VALUE_WIDTH = 16
MIB = 1024 * 1024


def seconds(value: object) -> str:
    """Seconds with two decimals, or '-' when not measured."""
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def _mib(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "-"


def ratio(value: object, floor: float | None) -> str:
    """`value / floor` as '1.23x', or '-' when either is missing."""
    if not isinstance(value, int | float) or not floor:
        return "-"
    return f"{value / floor:.2f}x"


def mb(mib: float) -> float:
    """MiB (what getrusage gives) in MB (10^6 bytes, what the targets say)."""
    return mib * MIB / 1e6


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def print_header(what: str, engine: str | None) -> None:
    """The first line: what runs, on what machine, how busy it is."""
    pgp = f", engine {engine}" if engine else ""
    print(
        f"batchbridge bench: {what}{pgp}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load avg {loadavg()} (1/5/15 min) at start",
        flush=True,
    )


def line(label: str, values: Sequence[str]) -> None:
    """One table row: a label, then each value right-aligned in its column."""
    print(f"{label:<{LABEL_WIDTH}}" + "".join(f"{value:>{VALUE_WIDTH}}" for value in values))


def print_setup(setup: Setup, generated: list[dict[str, Any]]) -> None:
    """Seconds spent before the measured runs, and what the generator child did."""
    print("\nsetup (not part of the measured runs)")
    for label, value in setup.seconds.items():
        print(f"  {label:<38} {value:8.2f} s")
    for figures in generated:
        print(
            f"    generator child: rows {figures['generate_s']:.2f} s, CSV "
            f"{figures['render_s']:.2f} s, waiting for gpg (encrypt+sign) "
            f"{figures['encrypt_s']:.2f} s, peak RSS {figures['peak_rss_mib']:,.0f} MiB"
        )


def print_file(rows: int, quarantined: int, generated: dict[str, Any], files: int = 1) -> None:
    """The file's size and planted bad rows."""
    what = f"{files} files of {rows:,} rows" if files > 1 else f"{rows:,} rows"
    each = " each" if files > 1 else ""
    print(
        f"\nfile: {what} ({quarantined:,} planted bad rows{each}), ciphertext{each} "
        f"{generated['ciphertext_bytes'] / MIB:,.1f} MiB, plaintext "
        f"{generated['plaintext_bytes'] / MIB:,.1f} MiB (never written to disk)"
    )


def print_runs(runs: list[RunFigures]) -> None:
    """Stage seconds, end to end, memory and counts of each run, side by side."""
    print(f"\n{'':<{LABEL_WIDTH}}" + "".join(f"{run.label:>{VALUE_WIDTH}}" for run in runs))
    stages = [run.stage_seconds() for run in runs]
    line("stage seconds (summed over files)", [""] * len(runs))
    for stage in STAGES:
        line(f"  {stage}", [seconds(s.get(stage)) for s in stages])
    line("  sum of stages", [seconds(sum(s.values())) for s in stages])
    line("  stream task, wall (Prefect API)", [seconds(run.stream_s) for run in runs])
    line(
        "    stream wall less its parts",
        [
            seconds(
                run.stream_s
                - sum(s.get(k, 0.0) for k in ("decrypt", "parse", "validate", "transform"))
            )
            if run.stream_s is not None
            else "-"
            for run, s in zip(runs, stages, strict=True)
        ],
    )
    run_feed_s = [run.report.get("seconds") for run in runs]
    line("run_feed (ledger, SFTP list, stages...)", [seconds(s) for s in run_feed_s])
    line(
        "Prefect overhead (flow - run_feed)",
        [
            seconds(run.flow_s - s) if isinstance(s, int | float) else "-"
            for run, s in zip(runs, run_feed_s, strict=True)
        ],
    )
    line("END TO END (flow call) s", [seconds(run.flow_s) for run in runs])
    line(
        "rows/s (end to end)",
        [f"{sum(f.get('rows_read') or 0 for f in run.files) / run.flow_s:,.0f}" for run in runs],
    )
    line("PEAK RSS pipeline process MiB", [f"{run.peak_rss_mib:,.0f}" for run in runs])
    line("  in MB", [f"{mb(run.peak_rss_mib):,.0f}" for run in runs])
    line("  RSS after imports MiB", [f"{run.child['rss_after_imports_mib']:,.0f}" for run in runs])
    for kind in ("stream", "quarantine", "load"):
        line(
            f"  peak during {kind} MiB (sampled)",
            [_mib(run.rss_by_task.get(kind)) for run in runs],
        )
    line("  CPU s in the process", [seconds(run.child["cpu_s"]) for run in runs])
    line("  CPU s in its children (gpg...)", [seconds(run.child["children_cpu_s"]) for run in runs])
    line("  python start + imports s", [seconds(run.child["imports_s"]) for run in runs])

    def total(key: str) -> list[str]:
        return [str(sum(f.get(key) or 0 for f in run.files)) for run in runs]

    def target(key: str) -> list[str]:
        return [
            str(
                sum(
                    ((f.get("targets") or {}).get("warehouse") or {}).get(key, 0) for f in run.files
                )
            )
            for run in runs
        ]

    for key in ("rows_read", "rows_valid", "rows_quarantined"):
        line(key.replace("_", " "), total(key))
    for key in ("inserted", "updated", "unchanged", "confirmed"):
        line(f"warehouse {key}", target(key))
    line("warehouse table rows", [str(run.warehouse_rows) for run in runs])
    line(
        "balanced",
        [
            "yes" if run.files and all(f.get("balanced") for f in run.files) else "NO"
            for run in runs
        ],
    )
    line("counts checked", ["ok" if not run.problems else "FAILED" for run in runs])


def print_floors(floors: Floors, runs: int) -> None:
    """Each floor's seconds and what it is."""
    print(f"\nfloors (best of {runs}, same data, same run)")
    hmac = (
        f"  (our HMAC of {floors.distinct_mrns:,} distinct MRNs: {seconds(floors.hmac_s)} s)"
        if floors.distinct_mrns is not None
        else ""
    )
    for label, value, note in (
        ("OpenSSH sftp get", floors.fetch_s, "  (connect + auth + transfer)"),
        ("  get of an empty file", floors.fetch_connect_s, "  (connect + auth alone)"),
        ("gpg --decrypt", floors.decrypt_s, ""),
        ("validate: plain pandera, whole file", floors.validate_s, "  (equivalent checks)"),
        ("transform: plain polars, whole file", floors.transform_s, hmac),
        ("psql \\copy (COPY alone)", floors.copy_s, ""),
        ("COPY + upsert SQL, empty target", floors.upsert_first_s, ""),
        ("COPY + upsert SQL, rerun", floors.upsert_rerun_s, ""),
    ):
        print(f"  {label:<38} {seconds(value):>8} s{note}")


def print_ratios(floors: Floors, runs: list[RunFigures]) -> None:
    """Each stage as a ratio to its floor, and end to end to the sum of the floors."""
    print(
        f"\n{'ratio to floor':<{LABEL_WIDTH}}" + "".join(f"{r.label:>{VALUE_WIDTH}}" for r in runs)
    )
    stages = [run.stage_seconds() for run in runs]
    upserts = upsert_floors(floors, len(runs))
    for label, stage, floor in (
        ("  fetch / sftp get", "fetch", floors.fetch_s),
        ("  decrypt / gpg --decrypt", "decrypt", floors.decrypt_s),
        ("  validate / plain pandera", "validate", floors.validate_s),
        ("  transform / plain polars + HMAC", "transform", floors.transform_s),
    ):
        line(label, [ratio(s.get(stage), floor) for s in stages])
        if stage == "fetch" and floors.fetch_s and floors.fetch_connect_s is not None:
            # The fetch stage reuses the run's connection; the floor connects first.
            transfer = floors.fetch_s - floors.fetch_connect_s
            line(
                "    (fetch / get minus empty get: transfer only)",
                [ratio(s.get(stage), transfer if transfer > 0 else None) for s in stages],
            )
    line(
        "  load / COPY + upsert SQL",
        [ratio(s.get("load"), u) for s, u in zip(stages, upserts, strict=True)],
    )
    line("  sum of floors s", [seconds(floors.total(u)) for u in upserts])
    line(
        "  END TO END / sum of floors",
        [ratio(run.flow_s, floors.total(u)) for run, u in zip(runs, upserts, strict=True)],
    )
    print(
        "  (quarantine and archive have no floor: small, and nothing outside does the same work;"
        "\n   decrypt is the wait for gpg's next block, gpg running meanwhile: it can be"
        " below 1x;\n   PostgreSQL targets COPY and upsert each chunk while the file streams"
        " (early stages):\n   their time is in the stream's, the load is what is left"
        " after it)"
    )


def upsert_floors(floors: Floors, runs: int) -> list[float | None]:
    """The load floor of each run: empty target first, then the rerun's."""
    return [floors.upsert_first_s, floors.upsert_rerun_s][:runs]


@dataclass(frozen=True)
class Verdict:
    """One target of the issue: passed or not, and the figures that decided it."""

    ok: bool
    target: str
    detail: str


def print_verdicts(verdicts: list[Verdict], note: str) -> None:
    """PASS/FAIL lines, one per target."""
    print(f"\nverdicts{note}")
    for verdict in verdicts:
        mark = "PASS" if verdict.ok else "FAIL"
        print(f"  {mark}  {verdict.target:<50} {verdict.detail}")
