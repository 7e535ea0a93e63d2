"""Load: upsert each target's rows in one transaction per file, under a load id."""

from __future__ import annotations

from batchbridge.connectors.targets.base import LoadRequest, LoadResult, Target
from batchbridge.tasks.guard import stage_task


@stage_task("load", task_run_name="load {target.name}")
def load_target(target: Target, request: LoadRequest) -> LoadResult:
    """Idempotent upsert; transient errors are retried inside the target connector."""
    return target.load(request)
