"""Load stage: one target's upsert of a file's rows (connectors.targets.loading)."""

from __future__ import annotations

from batchbridge.connectors.targets.loading import load_rows
from batchbridge.tasks.guard import stage_task

load_target = stage_task("load", task_run_name="load {target.name}")(load_rows)
