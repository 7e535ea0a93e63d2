"""Validate stage: parse strictly and split rows by the feed's schema (validations.parse)."""

from __future__ import annotations

from batchbridge.tasks.guard import stage_task
from batchbridge.validations.parse import parse_and_validate

validate_file = stage_task("validate")(parse_and_validate)
