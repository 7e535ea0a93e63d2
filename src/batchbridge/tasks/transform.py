"""Transform stage: valid rows to the feed's output shape (validations.transform)."""

from __future__ import annotations

from batchbridge.tasks.guard import stage_task
from batchbridge.validations.transform import transform_valid_rows

transform_rows = stage_task("transform")(transform_valid_rows)
