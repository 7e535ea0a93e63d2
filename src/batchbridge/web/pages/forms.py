"""What the pages accept, checked on the server with the CLI's rules; refusals never echo input.

GET parameters are ids, codes and statuses only (they end up in browser history and
proxy logs); anything a person types in free text (a reason, a record id, a value)
travels in a POST body. A refused value is named by its field, never repeated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query
from starlette.datastructures import FormData

from batchbridge.config import NAME_PATTERN
from batchbridge.config.stewards import is_allowed
from batchbridge.errors import IdLookupError, StewardError
from batchbridge.ledger.quarantine_store import LISTING_STATUSES
from batchbridge.steward.service import StewardService

REASON = r"[A-Za-z0-9_]{1,64}(?::[A-Za-z0-9_]{1,64})?"
"""A reason filter: 'column:rule' or just 'rule' (as `quarantine list --reason`)."""
ID = r"[0-9a-fA-F-]{4,36}"
"""A run or file id, or a prefix of one (at least 4 hex digits: runs_query.id_prefix)."""
NAME = NAME_PATTERN.removeprefix("^").removesuffix("$")
STATUSES = (*LISTING_STATUSES, "all")
"""As `quarantine list --status`: quarantined includes the fixed ones; all is every status."""
MAX_WHY = 500
MAX_VALUE = 1000
MAX_RECORD_ID = 128
SET_PREFIX = "set:"
BLANK_PREFIX = "blank:"


def optional(pattern: str) -> str:
    """`pattern`, or nothing at all (a whole-value match)."""
    # An empty parameter is a form's "any" choice: allowed, and read as no filter.
    return f"^(?:{pattern})?$"


Name = Annotated[str | None, Query(pattern=optional(NAME))]
Reason = Annotated[str | None, Query(pattern=optional(REASON))]
IdText = Annotated[str | None, Query(pattern=optional(ID))]
Status = Annotated[str, Query(pattern=optional("|".join(STATUSES)))]
Offset = Annotated[int, Query(ge=0, le=10**9)]

ID_PROBLEMS = {
    "id_unknown": "no {kind} of your tenants has that id",
    "id_ambiguous": "that id prefix matches several {kind}s: give more of the id",
    "id_invalid": "a {kind} id is at least 4 hex digits",
}


def blank_to_none(value: str | None) -> str | None:
    """An empty query parameter (a form's "any" choice) means no filter."""
    return value if value else None


def full_id(service: StewardService, kind: str, text: str | None) -> tuple[str | None, str | None]:
    """(the full run or file id, None) or (None, a problem in fixed words); no echo."""
    if not text:
        return None, None
    try:
        return service.full_id(kind, text), None
    except IdLookupError as exc:
        words = ID_PROBLEMS.get(exc.reason or "", ID_PROBLEMS["id_unknown"])
        return None, words.format(kind="run" if kind == "run" else "file")


def why_text(raw: object, *, required: bool, what: str) -> str | None:
    """A person's reason (a ticket number): trimmed, one line, bounded; StewardError else."""
    text = raw.strip() if isinstance(raw, str) else ""
    if not text:
        if required:
            raise StewardError(f"{what} needs a reason (a ticket number): it is audited")
        return None
    if len(text) > MAX_WHY or any(ord(c) < 32 for c in text):
        raise StewardError(f"a reason is one line of at most {MAX_WHY} characters")
    return text


def record_id_text(raw: object) -> str:
    """A record id to search for: one line, bounded; StewardError (without the value) else."""
    text = raw.strip() if isinstance(raw, str) else ""
    if not text or len(text) > MAX_RECORD_ID or any(ord(c) < 32 for c in text):
        raise StewardError(f"a record id is one line of 1 to {MAX_RECORD_ID} characters")
    return text


def edits_of(form: FormData) -> dict[str, str]:
    """Column changes of an edit form: `set:<column>` non-empty, or `blank:<column>` ticked.

    An empty input means "keep the value" (inputs are not filled with values: the row
    may be masked); ticking "empty it" sets the empty value.
    """
    changes: dict[str, str] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise StewardError("an edit form holds text fields only")
        if key.startswith(SET_PREFIX) and value != "":
            if len(value) > MAX_VALUE or any(ord(c) < 32 and c != "\t" for c in value):
                raise StewardError(f"a value is one line of at most {MAX_VALUE} characters")
            changes[key[len(SET_PREFIX) :]] = value
    for key, value in form.multi_items():
        if key.startswith(BLANK_PREFIX) and value:
            changes[key[len(BLANK_PREFIX) :]] = ""
    return changes


@dataclass(frozen=True)
class QueueFilters:
    """The queue's filters as the page holds them (ids, codes, statuses only)."""

    tenant: str | None = None
    feed: str | None = None
    file: str | None = None
    run: str | None = None
    reason: str | None = None
    status: str = "quarantined"
    age: str = ""

    def query(self, **changes: Any) -> str:
        """`/queue?…` with these filters, `changes` applied (None drops one)."""
        values: Mapping[str, Any] = {**self.__dict__, **changes}
        kept = {k: v for k, v in values.items() if v not in (None, "")}
        if kept.get("status") == "quarantined":
            del kept["status"]  # the default
        return "/queue" + (f"?{urlencode(kept)}" if kept else "")

    @property
    def active(self) -> bool:
        return self != QueueFilters()


def may(service: StewardService, tenant: str, action: str) -> bool:
    """Whether the person may `action` on `tenant` (to offer a button; the service decides)."""
    return is_allowed(service.directory, service.actor, tenant, action)


def utc_minute(moment: datetime | None) -> str:
    """`YYYY-MM-DD HH:MM UTC` ("-" when unknown); SQLite hands back UTC without its zone."""
    if moment is None:
        return "-"
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
