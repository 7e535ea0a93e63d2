"""Onboarding dry run of a sample file: decrypt, verify, parse, validate, mapping coverage; no load.

What a dry run reports carries counts, 'column:rule' reasons, the signer's fingerprint
and, on purpose, the local codes missing from a mapping table (codes, not patient
data), each with its row count. The plaintext stays in memory and nothing is written:
no ledger entry, no target row, no quarantine.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from batchbridge.config import LoadedFeed
from batchbridge.connectors.pgp.registry import build_decryptor
from batchbridge.errors import (
    BatchbridgeError,
    ConfigError,
    RunFailedError,
    withhold_unexpected_errors,
)
from batchbridge.validations.base import REASONS_COLUMN, FeedSchema, ValidationContext
from batchbridge.validations.mapping import load_mapping
from batchbridge.validations.parse import file_date_from_name, parse_and_validate
from batchbridge.validations.registry import get_schema

MAX_CODE_CHARS = 64
MAX_CODES_SHOWN = 50
COUNT_COLUMN = "rows_in_sample"
"""Last column of an unmapped-codes template: how many sample rows carry the code.

After the mapping table's own columns, so those can be copied into the table as they
are; and a table that keeps it still loads (extra columns are kept, no schema reads them).
"""
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters a spreadsheet runs as a formula: such codes stay out of a template."""
OVER_THRESHOLD_EXIT = RunFailedError.exit_code
"""Exit code of a dry run that finished but whose quarantine rate is over the threshold.

9 ("finished, report written, not clean"): the file does not fail whole (4 and 5 say
that) and the configuration may be fine (2); a deploy script gating on exit 0 stops.
"""


@dataclass(frozen=True)
class CodeCoverage:
    """How well one mapping table covers the codes of one file column.

    `unmapped` maps each code absent from the table to its row count, most rows first.
    Blank codes are not counted here (they fail the `required` rule instead).
    """

    mapping: str
    column: str
    table: str
    rows_with_code: int
    distinct_codes: int
    unmapped: dict[str, int]
    key: str = ""
    table_columns: tuple[str, ...] = ()
    """The mapping table's header (its key column is `key`), for an unmapped-codes template."""

    @property
    def unmapped_rows(self) -> int:
        return sum(self.unmapped.values())

    @property
    def unmapped_share(self) -> float:
        """Share of the rows carrying a code whose code is unmapped (0.0 for no rows)."""
        return self.unmapped_rows / self.rows_with_code if self.rows_with_code else 0.0


def mapping_coverage(
    codes: pl.Series,
    mapped: pl.Series,
    *,
    mapping: str,
    column: str,
    table: str,
    key: str | None = None,
    table_columns: Sequence[str] = (),
) -> CodeCoverage:
    """Which trimmed, non-blank `codes` are not in `mapped`, with their row counts.

    Trimmed like the validation rule (`checks.one_of`), so the counts equal the rows
    quarantined as `<column>:unmapped_code`.
    """
    values = codes.cast(pl.String).str.strip_chars()
    values = values.filter(values.is_not_null() & (values != ""))
    known = set(mapped.cast(pl.String).str.strip_chars().drop_nulls().to_list())
    counts = Counter(values.to_list())
    unmapped = {code: n for code, n in counts.items() if code not in known}
    ordered = dict(sorted(unmapped.items(), key=lambda item: (-item[1], item[0])))
    return CodeCoverage(
        mapping=mapping,
        column=column,
        table=table,
        rows_with_code=values.len(),
        distinct_codes=len(counts),
        unmapped=ordered,
        key=key or column,
        table_columns=tuple(table_columns) or (key or column,),
    )


def mapped_columns(schema: FeedSchema) -> dict[str, tuple[str, str]]:
    """mapping name -> (file column, mapping key column) for mappings keyed by a file column.

    A mapping table's key is its first required column (as `load_mapping` uses it); when
    the file has a column of that name, the table maps that column's codes.
    """
    found: dict[str, tuple[str, str]] = {}
    for name in schema.required_mappings:
        columns = schema.mapping_columns.get(name, ())
        if columns and columns[0] in schema.columns:
            found[name] = (columns[0], columns[0])
    return found


@dataclass
class DryRunReport:
    """What a dry run found; `failed` holds the reason when the file fails whole."""

    feed: str
    tenant: str
    sample: str
    decrypted: bool
    signer_fingerprint: str | None = None
    rows_read: int | None = None
    rows_declared: int | None = None
    rows_valid: int | None = None
    rows_quarantined: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    quarantine_rate: float | None = None
    quarantine_rate_threshold: float = 1.0
    coverage: list[CodeCoverage] = field(default_factory=list)
    failed_stage: str | None = None
    failed_reason: str | None = None
    failed_message: str | None = None
    exit_code: int = 0

    @property
    def over_threshold(self) -> bool:
        """Quarantined/read above the feed's alert threshold (as the nightly alert decides)."""
        rate = self.quarantine_rate
        return rate is not None and rate > self.quarantine_rate_threshold

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["coverage"] = [
            {**asdict(c), "unmapped_rows": c.unmapped_rows, "unmapped_share": c.unmapped_share}
            for c in self.coverage
        ]
        data["loaded"] = 0
        data["over_threshold"] = self.over_threshold
        return data


def _count_reasons(quarantined: pl.DataFrame) -> dict[str, int]:
    counter: Counter[str] = Counter()
    for reasons in quarantined.get_column(REASONS_COLUMN).to_list():
        counter.update(str(reason) for reason in reasons)
    return dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def dry_run_sample(
    loaded: LoadedFeed,
    sample: Path,
    *,
    plaintext: bool = False,
    today: date | None = None,
) -> DryRunReport:
    """Decrypt + verify (unless `plaintext`), parse, validate and measure mapping coverage.

    Loads nothing. A file that fails whole gives a report with `failed_*` and the error
    tree's exit code; configuration errors (missing secret, bad mapping) are raised.
    """
    config = loaded.config
    schema = get_schema(config.schema_name)
    mappings = {
        name: load_mapping(loaded.resolve_path(path), schema.mapping_columns.get(name, ()))
        for name, path in config.mappings.items()
    }
    report = DryRunReport(
        feed=config.feed, tenant=config.tenant, sample=sample.name, decrypted=not plaintext
    )
    stage = "read"
    try:
        if plaintext:
            data = sample.read_bytes()
        else:
            stage = "decrypt"
            decryptor = build_decryptor(loaded)
            verified = withhold_unexpected_errors(stage)(decryptor.decrypt_and_verify)(sample)
            report.signer_fingerprint = verified.signer_fingerprint
            data = verified.data
            del verified
        stage = "validate"
        zone = ZoneInfo(config.timezone)
        file_date = file_date_from_name(sample.name, today or datetime.now(zone).date())
        ctx = ValidationContext(
            tenant=config.tenant, file_date=file_date, timezone=config.timezone, mappings=mappings
        )
        validated = withhold_unexpected_errors(stage)(parse_and_validate)(
            data, config.format, schema, ctx
        )
        del data  # patient data: gone as soon as it is parsed
    except BatchbridgeError as exc:
        if exc.exit_code == 2:
            raise  # configuration, not the file: fix the YAML or the secrets first
        report.failed_stage, report.failed_reason = stage, exc.reason
        report.failed_message, report.exit_code = str(exc), exc.exit_code
        return report
    result = validated.result
    report.rows_read, report.rows_declared = validated.rows_read, validated.rows_declared
    report.rows_valid, report.rows_quarantined = result.valid.height, result.quarantined.height
    report.reasons = _count_reasons(result.quarantined)
    report.quarantine_rate_threshold = config.alerts.quarantine_rate_threshold
    if validated.rows_read:
        report.quarantine_rate = result.quarantined.height / validated.rows_read
    if report.over_threshold:
        report.exit_code = OVER_THRESHOLD_EXIT
    frame = pl.concat(
        [result.valid.select(schema.columns), result.quarantined.select(schema.columns)]
    )
    for name, (column, key) in mapped_columns(schema).items():
        table = mappings.get(name)
        if table is None:
            continue
        report.coverage.append(
            mapping_coverage(
                frame[column],
                table[key],
                mapping=name,
                column=column,
                table=config.mappings[name].name,
                key=key,
                table_columns=table.columns,
            )
        )
    return report


def display_code(code: str) -> str:
    """A code as printed: escaped when not printable, cut at MAX_CODE_CHARS."""
    shown = code if code.isprintable() else repr(code)
    return shown if len(shown) <= MAX_CODE_CHARS else shown[:MAX_CODE_CHARS] + "…"


def render_dry_run_text(report: DryRunReport) -> str:
    """Terminal text: each stage's outcome, reasons, mapping coverage; says nothing loaded."""
    lines = [
        f"dry run of feed {report.feed} (tenant {report.tenant}) on {report.sample}: "
        "nothing is loaded, nothing is recorded"
    ]
    if report.decrypted:
        if report.signer_fingerprint:
            lines.append(
                f"  decrypt + verify  ok: integrity-protected, signed by pinned partner key "
                f"{report.signer_fingerprint}"
            )
    else:
        lines.append("  decrypt + verify  skipped: plaintext sample (--plaintext)")
    if report.failed_stage is not None:
        lines.append(
            f"  {report.failed_stage:<16}  FAILED [{report.failed_reason}]: {report.failed_message}"
        )
        lines.append(f"result: the file fails whole; a nightly run would reject it (exit "
                     f"{report.exit_code})")  # fmt: skip
        return "\n".join(lines)
    trailer = (
        f"trailer says {report.rows_declared} = rows read"
        if report.rows_declared is not None
        else "no trailer record"
    )
    lines.append(f"  parse             ok: {report.rows_read} rows, {trailer}")
    lines.append(
        f"  validate          {report.rows_valid} valid, {report.rows_quarantined} quarantined"
    )
    for reason, count in report.reasons.items():
        lines.append(f"    {count:>8}  {reason}")
    for cov in report.coverage:
        mapped = cov.distinct_codes - len(cov.unmapped)
        lines.append(
            f"  mapping coverage  {cov.mapping} ({cov.table}) on column {cov.column}: "
            f"{cov.distinct_codes} distinct codes, {mapped} mapped, {len(cov.unmapped)} unmapped "
            f"on {cov.unmapped_rows} of {cov.rows_with_code} rows ({cov.unmapped_share:.1%})"
        )
        for code, count in list(cov.unmapped.items())[:MAX_CODES_SHOWN]:
            lines.append(f"    {count:>8}  {display_code(code)}")
        hidden = list(cov.unmapped.items())[MAX_CODES_SHOWN:]
        if hidden:
            lines.append(
                f"    … and {len(hidden)} more unmapped codes on {sum(n for _, n in hidden)} rows "
                "(--json lists all)"
            )
        if cov.unmapped:
            lines.append(
                f"    add them to {cov.table} (or ask the partner), then dry-run again; "
                "rows with unmapped codes are quarantined, not dropped"
            )
    lines.append(
        f"result: a nightly run would load {report.rows_valid} rows and quarantine "
        f"{report.rows_quarantined}"
    )
    over = threshold_message(report)
    if over is not None:
        lines.append(over)
    return "\n".join(lines)


def threshold_message(report: DryRunReport) -> str | None:
    """The one line saying the quarantine rate is over the feed's threshold, else None."""
    if not report.over_threshold or report.quarantine_rate is None:
        return None
    return (
        f"over threshold: {report.quarantine_rate:.1%} of rows quarantined "
        f"({report.rows_quarantined} of {report.rows_read}), above "
        f"alerts.quarantine_rate_threshold {report.quarantine_rate_threshold:.1%}: "
        f"a nightly run would raise a quarantine_rate alert (exit {OVER_THRESHOLD_EXIT})"
    )


def unmapped_template(coverage: CodeCoverage) -> tuple[str, list[str]]:
    """CSV text of the unmapped codes to fill in, and the codes left out of it.

    One row per unmapped code: the mapping's key column holds the code, its other
    columns are empty, COUNT_COLUMN comes last. Codes a spreadsheet would run as a
    formula are left out (prefixing them would change the code): add those by hand.
    Nothing of the sample but its codes is written.
    """
    columns = list(coverage.table_columns)
    if COUNT_COLUMN in columns:
        raise ConfigError(f"{coverage.table} has a column {COUNT_COLUMN!r}: rename it first")
    key = columns.index(coverage.key)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*columns, COUNT_COLUMN])
    left_out: list[str] = []
    for code, count in coverage.unmapped.items():
        if code.startswith(FORMULA_STARTS):
            left_out.append(code)
            continue
        row = [""] * len(columns)
        row[key] = code
        writer.writerow([*row, str(count)])
    return out.getvalue(), left_out


def template_paths(path: Path, coverage: list[CodeCoverage]) -> dict[str, Path]:
    """Where each mapping's template goes: `path` itself, or one per mapping beside it."""
    if len(coverage) == 1:
        return {coverage[0].mapping: path}
    return {c.mapping: path.with_name(f"{path.stem}.{c.mapping}{path.suffix}") for c in coverage}
