"""Health check of a feed's targets: a canary row written and committed, our columns present."""

from __future__ import annotations

from collections.abc import Callable

from batchbridge.config import LoadedFeed, TargetConfig
from batchbridge.connectors.targets.base import CANARY_TABLE, SupportsHealthCanary, Target
from batchbridge.connectors.targets.registry import open_target
from batchbridge.monitoring.health_model import CheckResult, guarded
from batchbridge.validations.registry import get_schema

TargetOpener = Callable[[LoadedFeed, TargetConfig], Target]


def check_target(
    loaded: LoadedFeed, target_config: TargetConfig, *, open_: TargetOpener = open_target
) -> list[CheckResult]:
    """The target accepts a write + commit (canary row) and its table has our columns."""
    name = f"target.{target_config.name}"

    @guarded(name)
    def run() -> list[CheckResult]:
        target = open_(loaded, target_config)
        try:
            if not isinstance(target, SupportsHealthCanary):
                return [CheckResult.skipped(name, "this target kind has no writability check")]
            target.check_writable(loaded.config.tenant)
            problem = _missing_columns(loaded, target_config, target)
        finally:
            target.close()
        if problem:
            return [CheckResult.failed(name, problem)]
        return [
            CheckResult.passed(
                name,
                f"wrote, read back and committed the {loaded.config.tenant} row of {CANARY_TABLE}",
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
