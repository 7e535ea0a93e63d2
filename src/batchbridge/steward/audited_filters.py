"""What of a person's filters goes into the audit log: codes and ids, never typed free text.

A filter box may receive anything, a patient's name pasted by mistake included. A free-text
filter value (a reason, a feed, an actor) is written to the audit log only when the data
confirmed it is a real code (it matched rows, or names a configured feed); otherwise the
event records that a value was given, not what it was. Choices, numbers, dates and ids
resolved from the ledger are written as given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

NOT_SHOWN = "(given; not shown: it matched nothing)"
UNKNOWN_TENANT = "(unknown tenant)"
"""The audit event's tenant when a person names a tenant nobody has a role for."""


def audited_filters(
    filters: Mapping[str, Any], *, free_text: Iterable[str], confirmed: Iterable[str] = ()
) -> dict[str, Any]:
    """`filters` without None values, free-text ones replaced unless `confirmed`."""
    unsure = set(free_text) - set(confirmed)
    return {
        name: (NOT_SHOWN if name in unsure else value)
        for name, value in filters.items()
        if value is not None
    }
