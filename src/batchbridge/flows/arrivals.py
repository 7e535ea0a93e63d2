"""The arrivals check flow: a partner file late for its window, and keys near expiry, as alerts.

Whether the file arrived is judged from two places, because either alone is wrong:

- the partner's server, listed now (the same "ready" listing the nightly run uses). The
  SLA is about the file being *on the server* by `expected_by`, and the check runs
  before the nightly run has fetched anything, so the ledger alone would cry wolf. A
  partner uploading shortly before midnight for a deadline shortly after it is also
  only visible here. Files the ledger already knew before today's local midnight (a
  failed file left on the server, yesterday's file when nothing moves files away) do
  not count.
- the ledger: files first seen by a run since local midnight. A run may already have
  fetched the file and moved it to the processed folder, so it is no longer listed.

When the server cannot be listed (down, host key changed) the ledger alone decides and
the alert says so; the health check reports the server problem itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from sqlalchemy import or_, select

from batchbridge.config import LoadedFeed, load_feed
from batchbridge.config.settings import Settings, load_settings
from batchbridge.connectors.pgp.keys import key_expiries
from batchbridge.connectors.pgp.registry import decryptor_keys
from batchbridge.connectors.sources.base import RemoteFile
from batchbridge.connectors.sources.registry import open_source
from batchbridge.errors import BatchbridgeError, ConfigError, LedgerNotFoundError
from batchbridge.ledger.models import LedgerFile
from batchbridge.ledger.store import LedgerStore
from batchbridge.monitoring.alert_rules import Alert, KeyExpiry, key_expiry_alerts, late_file_alert
from batchbridge.monitoring.arrival_rules import (
    SeenFile,
    count_arrivals,
    is_late,
    local_deadline,
    local_midnight,
    parse_now,
)
from batchbridge.tasks.alerts import send_alerts
from batchbridge.tasks.discover import list_ready_files

logger = logging.getLogger(__name__)


def ledger_files(
    store: LedgerStore, *, tenant: str, feed: str, since: datetime, names: Sequence[str]
) -> list[SeenFile]:
    """Ledger files of the feed first seen since `since`, or carrying one of `names`."""
    with store.session() as session:
        rows = session.execute(
            select(LedgerFile.name, LedgerFile.size, LedgerFile.first_seen_at).where(
                LedgerFile.tenant == tenant,
                LedgerFile.feed == feed,
                # UTC: SQLite keeps the ledger's UTC times without their offset.
                or_(LedgerFile.first_seen_at >= since.astimezone(UTC), LedgerFile.name.in_(names)),
            )
        ).all()
    return [
        SeenFile(
            name=name,
            size=size,
            first_seen_at=seen if seen.tzinfo is not None else seen.replace(tzinfo=UTC),
        )
        for name, size, seen in rows
    ]


@dataclass(frozen=True)
class ArrivalCheck:
    """Outcome of the late-file check for one feed at one moment."""

    deadline: datetime | None
    files_seen: int | None
    late: bool
    source_problem: str | None = None


def check_late_file(loaded: LoadedFeed, settings: Settings, now: datetime) -> ArrivalCheck:
    """Apply the feed's arrival window; the server and the ledger are read only when due."""
    config = loaded.config
    window = config.alerts.arrival
    if window is None:
        return ArrivalCheck(deadline=None, files_seen=None, late=False)
    deadline = local_deadline(window, config.timezone, now)
    if deadline is None or now < deadline.astimezone(UTC):
        return ArrivalCheck(deadline=deadline, files_seen=None, late=False)

    listed: list[RemoteFile] = []
    source_problem: str | None = None
    try:
        source = open_source(loaded)
        try:
            listed = list_ready_files(source)
        finally:
            source.close()
    except BatchbridgeError as exc:
        source_problem = exc.reason
        logger.warning("%s: source not listed for the arrival check: [%s]", config.feed, exc.reason)

    since = local_midnight(config.timezone, now)
    try:
        store = LedgerStore.open_existing(settings.database_url)
    except LedgerNotFoundError:
        # A new install before its first nightly run: no run has seen any file yet, so
        # the server's listing alone decides (the check must not create the ledger).
        seen: list[SeenFile] = []
    else:
        try:
            seen = ledger_files(
                store,
                tenant=config.tenant,
                feed=config.feed,
                since=since,
                names=[r.name for r in listed],
            )
        finally:
            store.engine.dispose()
    files_seen = count_arrivals(listed, seen, since)
    return ArrivalCheck(
        deadline=deadline,
        files_seen=files_seen,
        late=is_late(window, config.timezone, now, files_seen),
        source_problem=source_problem,
    )


def read_key_expiries(loaded: LoadedFeed) -> list[KeyExpiry]:
    """Expiry of every part of the partner's pinned keys and of our private key."""
    keys = decryptor_keys(loaded.config.pgp, base_dir=loaded.base_dir)
    found: list[KeyExpiry] = []
    for index, armored in enumerate(keys.partner_public_keys, start=1):
        found += [
            KeyExpiry(f"partner_key_{index}", fpr, expires)
            for fpr, expires in key_expiries([armored])
        ]
    found += [
        KeyExpiry("our_key", fpr, expires)
        for fpr, expires in key_expiries([keys.private_key.get_secret_value()])
    ]
    return found


@flow(
    name="check-arrivals",
    flow_run_name="{feed} check-arrivals",
    log_prints=False,
    persist_result=False,
)
def check_arrivals(
    feed: str, config_dir: str | None = None, now: str | None = None
) -> dict[str, object]:
    """Alert when the feed's file is late for its arrival window, or a key nears expiry.

    Schedule it daily a few minutes after the window's `expected_by`, in the feed's time
    zone. `now` (ISO 8601 with offset) replaces the clock, for tests and backfills. Fails
    after sending what it could when a key cannot be read.
    """
    log = get_run_logger()
    settings = load_settings(config_dir)
    loaded = load_feed(feed, settings.config_dir)
    config = loaded.config
    moment = parse_now(now)
    alerts: list[Alert] = []

    arrival = check_late_file(loaded, settings, moment)
    if arrival.deadline is not None and arrival.files_seen is not None:
        log.info(
            "%s: %d file(s) arrived for the %s deadline%s",
            feed,
            arrival.files_seen,
            f"{arrival.deadline:%Y-%m-%d %H:%M %Z}",
            " (server not listed: ledger only)" if arrival.source_problem else "",
        )
    if arrival.late and arrival.deadline is not None:
        alerts.append(
            late_file_alert(
                config,
                deadline=arrival.deadline,
                checked_at=moment,
                source_problem=arrival.source_problem,
            )
        )

    key_problem: BatchbridgeError | None = None
    try:
        alerts += key_expiry_alerts(config, read_key_expiries(loaded), now=moment)
    except BatchbridgeError as exc:
        key_problem = exc
        log.error("%s: keys not checked for expiry: [%s] %s", feed, exc.reason, exc)

    summary = send_alerts(alerts, loaded)
    if key_problem is not None:
        raise ConfigError(f"feed {feed}: keys not checked for expiry: {key_problem}")
    return {
        "feed": feed,
        "checked_at": moment.isoformat(timespec="seconds"),
        "deadline": arrival.deadline.isoformat() if arrival.deadline else None,
        "files_seen": arrival.files_seen,
        "late": arrival.late,
        "kinds": sorted({str(a.kind) for a in alerts}),
        **summary.counts(),
    }
