"""Health check of a feed's targets: each kind proves itself usable its own way and says how.

- A target with `probe_health` (FHIR: the CapabilityStatement read and a transaction
  holding one count-only search posted, nothing written; outbound SFTP: a probe file
  written, renamed, sized and deleted) runs it and reports the sentence it returns.
- A SQL target (`check_writable`) writes, reads back and commits its tenant's canary row,
  and its table must have our columns.
- Any other kind is skipped, saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from batchbridge.config import LoadedFeed, TargetConfig
from batchbridge.connectors.targets.base import CANARY_TABLE, SupportsHealthCanary, Target
from batchbridge.connectors.targets.registry import open_target
from batchbridge.monitoring.health_model import CheckResult, guarded
from batchbridge.validations.registry import get_schema

TargetOpener = Callable[[LoadedFeed, TargetConfig], Target]


@runtime_checkable
class SupportsHealthProbe(Protocol):
    """A target that proves itself usable its own way and says what it did."""

    name: str

    def probe_health(self, tenant: str) -> str:
        """Run the probe; what it did, PHI-free. A TargetError names the step that failed."""
        ...


def check_target(
    loaded: LoadedFeed, target_config: TargetConfig, *, open_: TargetOpener = open_target
) -> list[CheckResult]:
    """The target's own probe, or a canary write + commit and our columns (SQL targets)."""
    name = f"target.{target_config.name}"
    tenant = loaded.config.tenant

    @guarded(name)
    def run() -> list[CheckResult]:
        target = open_(loaded, target_config)
        try:
            if isinstance(target, SupportsHealthProbe):
                return [CheckResult.passed(name, target.probe_health(tenant))]
            if not isinstance(target, SupportsHealthCanary):
                return [CheckResult.skipped(name, "this target kind has no writability check")]
            target.check_writable(tenant)
            problem = _missing_columns(loaded, target_config, target)
        finally:
            target.close()
        if problem:
            return [CheckResult.failed(name, problem)]
        return [
            CheckResult.passed(
                name, f"wrote, read back and committed the {tenant} row of {CANARY_TABLE}"
            )
        ]

    return run()


def _missing_columns(loaded: LoadedFeed, config: TargetConfig, target: Target) -> str | None:
    # An existing table that lacks a configured column fails every load (batchbridge does
    # not alter tables): worth knowing before the night. A missing table is created.
    table_columns = getattr(target, "table_columns", None)
    if table_columns is None:
        return None
    present = set(table_columns())
    if not present:
        return None
    schema = get_schema(loaded.config.schema_name)
    wanted = list(dict.fromkeys([*schema.natural_key, *config.columns]))
    missing = [column for column in wanted if column not in present]
    if missing:
        table = getattr(config, "table", "?")
        return f"table {table} lacks columns {', '.join(missing)} (loads would fail)"
    return None
