"""Would a row pass now? Edited values re-validated with today's schema and mapping; nothing saved.

The answer is pass, or the 'column:rule' reasons still failing: no value. It is not
audited (a steward types and re-asks many times; the masked row already shows its
reasons), but only a person who may fix the row may ask, and refusals are audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchbridge.errors import StewardError, withhold_unexpected_errors
from batchbridge.ledger.models import LedgerFile
from batchbridge.steward.access import StewardAccess
from batchbridge.steward.csv_files import safe_names
from batchbridge.steward.feed_context import FeedContext

if TYPE_CHECKING:
    from batchbridge.validations.base import FeedSchema, ValidationContext


def check_columns(ctx: FeedContext, feed: str, changes: Mapping[str, str]) -> None:
    """Refuse changes naming a column the feed does not have (names shown only if safe)."""
    unknown = sorted(set(changes) - set(ctx.schema.columns))
    if unknown:
        raise StewardError(
            f"unknown column(s) {safe_names(unknown)} for feed {feed} "
            f"(columns: {', '.join(ctx.schema.columns)})"
        )


def reasons_now(
    values: Mapping[str, str | None],
    row_number: int,
    schema: FeedSchema,
    vctx: ValidationContext,
) -> list[str]:
    """The 'column:rule' reasons one row fails under `schema` and `vctx` (empty: it passes).

    The row is checked alone: `unique` compares it with no other row here.
    """
    # Polars and pandera load only when a preview is asked for (fast CLI start).
    from batchbridge.steward.release import revalidate, rows_frame

    frame = rows_frame([(row_number, values)], schema.columns)
    # As in a release: an unforeseen error is reported by class only (pandera's own
    # messages may quote cell values).
    checked = withhold_unexpected_errors("validate")(revalidate)(frame, schema, vctx)
    return list(checked.reasons.get(row_number, []))


@dataclass(frozen=True)
class FixPreview:
    """What a fix would do: the columns it changes and the reasons the row would still fail."""

    quarantine_id: int
    changed: list[str]
    reasons: list[str]

    @property
    def passes(self) -> bool:
        return not self.reasons


class FixPreviewing(StewardAccess):
    """preview_fix of StewardService."""

    def preview_fix(self, quarantine_id: int, changes: Mapping[str, str]) -> FixPreview:
        """Re-validate the row with `changes` applied, with the feed's current mapping tables."""
        from batchbridge.steward.release import validation_context
        from batchbridge.validations.mapping import load_feed_mappings

        row = self._row(quarantine_id, "fix")
        self._require_quarantined(row)
        ctx = self.feed_for(row.feed, row.tenant)
        check_columns(ctx, row.feed, changes)
        values = ctx.decrypt(row)
        changed = sorted(c for c, v in changes.items() if (values.get(c) or "") != v)
        values.update(changes)
        with self.store.session() as s:
            file = s.get_one(LedgerFile, row.file_id)
        vctx = validation_context(ctx, file, load_feed_mappings(ctx.loaded, ctx.schema))
        reasons = reasons_now(values, row.row_number, ctx.schema, vctx)
        del values  # patient values: only the reasons leave this function
        return FixPreview(quarantine_id=quarantine_id, changed=changed, reasons=reasons)
