"""Reconcile stage: a file is done only when every count balances (connectors.targets.loading)."""

from __future__ import annotations

from batchbridge.connectors.targets.loading import reconcile_counts
from batchbridge.tasks.guard import stage_task

reconcile_file = stage_task("reconcile")(reconcile_counts)
