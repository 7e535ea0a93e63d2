"""Quarantine stage: encrypt each invalid row (validations.quarantine)."""

from __future__ import annotations

from batchbridge.tasks.guard import stage_task
from batchbridge.validations.quarantine import encrypt_quarantined

encrypt_quarantined_rows = stage_task("quarantine")(encrypt_quarantined)
