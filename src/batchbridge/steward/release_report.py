"""What a release did, per file: rows taken, released, still invalid, loads; no PHI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from batchbridge.ledger.run_report import TargetCounts

RELEASE_REPORT_KIND = "quarantine_release"
"""`kind` of a replay run's stored report (a nightly run's report has no kind)."""


@dataclass
class FileRelease:
    """One file's part of a release: rows taken, released, still invalid, and the loads."""

    file_id: str
    file_name: str
    selected: int = 0
    released: int = 0
    still_quarantined: int = 0
    new_reasons: dict[str, int] = field(default_factory=dict)
    targets: dict[str, TargetCounts] = field(default_factory=dict)
    load_ids: list[str] = field(default_factory=list)
    balanced: bool | None = None
    failed_stage: str | None = None
    reason: str | None = None
    message: str | None = None

    def count_reasons(self, reasons: Mapping[int, Sequence[str]]) -> None:
        """Tally the still-invalid rows' reasons (a row may count under several)."""
        counter: Counter[str] = Counter()
        for found in reasons.values():
            counter.update(found)
        self.new_reasons = dict(sorted(counter.items()))


@dataclass
class ReleaseRun:
    """A release of one feed's rows: one ledger run (is_rerun) with its files."""

    run_id: str
    tenant: str
    feed: str
    requested_by: str
    status: str = "running"
    files: list[FileRelease] = field(default_factory=list)
    error: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The run's stored report."""
        data = asdict(self)
        data["kind"] = RELEASE_REPORT_KIND
        data["totals"] = {
            "selected": sum(f.selected for f in self.files),
            "released": sum(f.released for f in self.files),
            "still_quarantined": sum(f.still_quarantined for f in self.files),
            "files_failed": sum(f.failed_stage is not None for f in self.files),
        }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReleaseRun:
        """Rebuild a stored release report."""
        fields_ = {k: v for k, v in data.items() if k not in ("files", "totals", "kind")}
        files = [
            FileRelease(
                **{
                    **f,
                    "targets": {n: TargetCounts(**t) for n, t in f.get("targets", {}).items()},
                }
            )
            for f in data.get("files", [])
        ]
        return cls(**fields_, files=files)


@dataclass
class ReleaseReport:
    """What one `release` call did, over every feed its rows came from."""

    runs: list[ReleaseRun] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)

    @property
    def files(self) -> list[FileRelease]:
        return [f for run in self.runs for f in run.files]

    @property
    def selected(self) -> int:
        return sum(f.selected for f in self.files)

    @property
    def released(self) -> int:
        return sum(f.released for f in self.files)

    @property
    def still_quarantined(self) -> int:
        return sum(f.still_quarantined for f in self.files)

    @property
    def errors(self) -> list[str]:
        """One line per failed file or feed: stage, reason and message (PHI-free)."""
        found = [
            f"{f.file_name}: failed at {f.failed_stage}: [{f.reason}] {f.message}"
            for f in self.files
            if f.failed_stage is not None
        ]
        found += [
            f"{run.feed}: [{run.error['reason']}] {run.error['message']}"
            for run in self.runs
            if run.error
        ]
        return found

    def totals(self) -> dict[str, int]:
        """Counts over every file."""
        return {
            "selected": self.selected,
            "released": self.released,
            "still_quarantined": self.still_quarantined,
            "skipped": len(self.skipped),
            "errors": len(self.errors),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`quarantine release --json`, the flow's return value)."""
        return {
            "runs": [run.to_dict() for run in self.runs],
            "skipped": {str(k): v for k, v in self.skipped.items()},
            "totals": self.totals(),
        }


def _file_lines(f: FileRelease) -> list[str]:
    balanced = "-" if f.balanced is None else ("yes" if f.balanced else "NO")
    lines = [
        f"  {f.file_name[:44]:<44} selected {f.selected:>5}  released {f.released:>5}  "
        f"still quarantined {f.still_quarantined:>5}  file balanced {balanced}"
    ]
    if f.failed_stage:
        lines.append(f"    failed at {f.failed_stage}: [{f.reason}] {f.message}")
    for reason, count in f.new_reasons.items():
        lines.append(f"    still invalid {count:>5} x {reason}")
    for name, t in f.targets.items():
        lines.append(
            f"    target {name}: sent {t.sent} inserted {t.inserted} updated {t.updated} "
            f"unchanged {t.unchanged} rejected {t.rejected} confirmed {t.confirmed}"
        )
    return lines


def render_release_run(run: ReleaseRun) -> list[str]:
    """Terminal lines for one feed's release run."""
    lines = [
        f"release run {run.run_id}  feed {run.feed}  tenant {run.tenant}  "
        f"by {run.requested_by}  status {run.status.upper()}"
    ]
    for f in run.files:
        lines += _file_lines(f)
    if run.error:
        lines.append(f"  failed: [{run.error['reason']}] {run.error['message']}")
    return lines


def render_release_text(report: ReleaseReport) -> str:
    """The terminal view of a release."""
    lines: list[str] = []
    for run in report.runs:
        lines += render_release_run(run)
    for quarantine_id, why in sorted(report.skipped.items()):
        lines.append(f"  row {quarantine_id}: skipped ({why})")
    lines.append("totals: " + ", ".join(f"{k} {v}" for k, v in report.totals().items()))
    return "\n".join(lines)


def render_release_markdown(report: ReleaseReport, *, feed: str) -> str:
    """The replay flow's artifact: counts per file, reasons, failures (no values)."""
    status = "failed" if report.errors else "done"
    parts = [
        f"# {feed} quarantine replay: **{status}**",
        "",
        "Totals: " + ", ".join(f"{k} {v}" for k, v in report.totals().items()),
        "",
        "| run | file | selected | released | still quarantined | file balanced | error |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for run in report.runs:
        for f in run.files:
            balanced = "" if f.balanced is None else ("yes" if f.balanced else "**no**")
            parts.append(
                f"| `{run.run_id}` | {f.file_name} | {f.selected} | {f.released} | "
                f"{f.still_quarantined} | {balanced} | {f.reason or ''} |"
            )
    reasons = [
        f"- `{f.file_name}`: {count} x `{reason}`"
        for f in report.files
        for reason, count in f.new_reasons.items()
    ]
    if reasons:
        parts += ["", "## Still invalid", *reasons]
    if report.errors:
        parts += ["", "## Failures", *(f"- {line}" for line in report.errors)]
    if report.skipped:
        parts += ["", f"Skipped {len(report.skipped)} row(s) already settled or not ready."]
    return "\n".join(parts)
