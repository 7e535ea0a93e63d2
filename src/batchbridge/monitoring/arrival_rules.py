"""When a partner's file counts as late: deadlines, local days, today's arrivals (pure rules).

See `batchbridge.flows.arrivals` for why arrivals are judged from both the partner's
server and the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from batchbridge.config import ALL_WEEKDAYS, ArrivalWindow
from batchbridge.connectors.sources.base import RemoteFile
from batchbridge.errors import ConfigError


@dataclass(frozen=True)
class SeenFile:
    """A file the ledger knows for the feed, and when a run first saw it (UTC)."""

    name: str
    size: int
    first_seen_at: datetime


def local_deadline(window: ArrivalWindow, tz: str, now: datetime) -> datetime | None:
    """The deadline of `now`'s local day in `tz`, or None when that day expects no file.

    A deadline that does not exist on a spring-forward day (02:30 in a gap) falls an
    hour later by the clock; one that occurs twice on a fall-back day is the first.
    """
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    if ALL_WEEKDAYS[local.weekday()] not in window.days:
        return None
    hour, minute = (int(part) for part in window.expected_by.split(":"))
    return datetime.combine(local.date(), time(hour, minute), tzinfo=zone)


def local_midnight(tz: str, now: datetime) -> datetime:
    """The start of `now`'s local day in `tz`, as an aware UTC time."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    return datetime.combine(local.date(), time(0, 0), tzinfo=zone).astimezone(UTC)


def is_late(window: ArrivalWindow, tz: str, now: datetime, files_seen_today: int) -> bool:
    """Whether the partner missed today's window: an expected day, past the deadline, no file."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    deadline = local_deadline(window, tz, now)
    if deadline is None:
        return False
    # Compared in UTC: two datetimes sharing one ZoneInfo compare by wall clock, which
    # gets the repeated hour of a fall-back night wrong.
    if now.astimezone(UTC) < deadline.astimezone(UTC):
        return False
    return files_seen_today == 0


def count_arrivals(listed: Sequence[RemoteFile], seen: Sequence[SeenFile], since: datetime) -> int:
    """Files that count as today's delivery (see the module docstring for why these)."""
    known_before = {(f.name, f.size) for f in seen if f.first_seen_at < since}
    arrived = {(r.name, r.size) for r in listed if (r.name, r.size) not in known_before}
    arrived |= {(f.name, f.size) for f in seen if f.first_seen_at >= since}
    return len(arrived)


def parse_now(now: str | None) -> datetime:
    """`now` as an aware UTC time: the given ISO time (tests, backfills) or the clock."""
    if now is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(now)
    except ValueError:
        raise ConfigError(f"now={now!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ConfigError(f"now={now!r} needs a UTC offset (e.g. 2026-11-20T08:00:00-06:00)")
    return moment.astimezone(UTC)
