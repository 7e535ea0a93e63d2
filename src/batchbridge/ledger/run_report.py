"""A run's report as the ledger stores it: per-file counts, states, reasons, timings; no PHI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TargetCounts:
    """What one target did with one file's valid rows."""

    sent: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    confirmed: int = 0
    inactivated: int = 0
    rejection_reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class FileReport:
    """One file's outcome in a run."""

    name: str
    file_id: str | None
    outcome: str
    is_rerun: bool = False
    failed_stage: str | None = None
    reason: str | None = None
    message: str | None = None
    rows_read: int | None = None
    rows_declared: int | None = None
    rows_valid: int | None = None
    rows_quarantined: int | None = None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    targets: dict[str, TargetCounts] = field(default_factory=dict)
    balanced: bool | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class RunReport:
    """A whole run: per-file outcomes, names skipped, totals.

    `flow_run_id` is the Prefect flow run that made it (None outside Prefect, and in
    reports stored before it was recorded here: `runs.flow_run_id` has it for those).
    """

    run_id: str
    tenant: str
    feed: str
    status: str = "running"
    flow_run_id: str | None = None
    is_rerun: bool = False
    started_at: str = ""
    finished_at: str | None = None
    seconds: float | None = None
    files: list[FileReport] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    error: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failed_files(self) -> list[FileReport]:
        return [f for f in self.files if f.outcome == "failed"]

    def totals(self) -> dict[str, int]:
        """Sums over files: read, valid, quarantined, and files by outcome."""
        return {
            "files": len(self.files),
            "files_reconciled": sum(f.outcome == "reconciled" for f in self.files),
            "files_failed": len(self.failed_files),
            "files_skipped": len(self.skipped),
            "rows_read": sum(f.rows_read or 0 for f in self.files),
            "rows_valid": sum(f.rows_valid or 0 for f in self.files),
            "rows_quarantined": sum(f.rows_quarantined or 0 for f in self.files),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        """Rebuild a report stored in the ledger."""
        fields_ = {k: v for k, v in data.items() if k not in ("files", "totals")}
        files = [
            FileReport(
                **{
                    **f,
                    "targets": {n: TargetCounts(**t) for n, t in f.get("targets", {}).items()},
                }
            )
            for f in data.get("files", [])
        ]
        return cls(**fields_, files=files)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what `--json` prints and the ledger stores)."""
        data = asdict(self)
        data["totals"] = self.totals()
        return data


SHORT_ID_LENGTH = 8
"""Characters of an id shown in lists and hints (a uuid4's first group)."""


def short_id(ident: str) -> str:
    """The id as lists show it: enough to find it again as a prefix (`runs show abcd1234`)."""
    return ident[:SHORT_ID_LENGTH]


def show_command(run_id: str) -> str:
    """The command that shows a run's trace."""
    return f"batchbridge runs show {short_id(run_id)}"


def format_count(value: int | None) -> str:
    """A count for a table cell: "-" when unknown."""
    return "-" if value is None else str(value)


def render_text(report: RunReport) -> str:
    """A terminal table: one line per file, then reasons and totals."""
    rerun = " (rerun)" if report.is_rerun else ""
    flow_run = f"  prefect flow run {report.flow_run_id}" if report.flow_run_id else ""
    lines = [
        f"batchbridge run {report.run_id}{rerun}{flow_run}",
        f"feed {report.feed}  tenant {report.tenant}  status {report.status.upper()}"
        + (f"  {report.seconds:.2f}s" if report.seconds is not None else ""),
        "",
        f"{'file':<44} {'outcome':<11} {'read':>8} {'valid':>8} {'quar.':>7} "
        f"{'loaded':>8} {'balanced':>8}",
    ]
    for f in report.files:
        loaded = sum(t.confirmed for t in f.targets.values()) if f.targets else None
        balanced = "-" if f.balanced is None else ("yes" if f.balanced else "NO")
        lines.append(
            f"{f.name[:44]:<44} {f.outcome + ('*' if f.is_rerun else ''):<11} "
            f"{format_count(f.rows_read):>8} {format_count(f.rows_valid):>8} "
            f"{format_count(f.rows_quarantined):>7} {format_count(loaded):>8} {balanced:>8}"
        )
        if f.outcome == "failed":
            lines.append(f"    failed at {f.failed_stage}: [{f.reason}] {f.message}")
        for reason, count in f.quarantine_reasons.items():
            lines.append(f"    quarantined {count:>6} x {reason}")
        for name, t in f.targets.items():
            lines.append(
                f"    target {name}: sent {t.sent} inserted {t.inserted} updated {t.updated} "
                f"unchanged {t.unchanged} rejected {t.rejected} confirmed {t.confirmed}"
                + (f" inactivated {t.inactivated}" if t.inactivated else "")
            )
            for reason, count in t.rejection_reasons.items():
                lines.append(f"    rejected by {name} {count:>6} x {reason}")
        if f.stage_seconds:
            timing = " ".join(f"{k} {v:.2f}s" for k, v in f.stage_seconds.items())
            lines.append(f"    seconds: {timing}")
    for name, why in report.skipped.items():
        lines.append(f"{name[:44]:<44} skipped     ({why})")
    lines += [f"note: {note}" for note in report.notes]
    if report.error:
        lines.append(
            f"run failed at {report.error['stage']}: [{report.error['reason']}] "
            f"{report.error['message']}"
        )
    totals = report.totals()
    lines += [
        "",
        "totals: " + ", ".join(f"{k} {v}" for k, v in totals.items()),
    ]
    if any(f.is_rerun for f in report.files):
        lines.append("* file was seen by an earlier run (rerun)")
    lines.append(f"details: {show_command(report.run_id)}")
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    """`4.2s`, `3m05s`, `2h07m`; "-" when unknown (still running, or it died)."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"
