"""What `batchbridge deploy` makes: one table row per flow, and each tenant's run limit.

A per-feed flow (nightly run, arrival check, health check) is a row of FEED_DEPLOYMENTS,
made once for every feed whose host keys are pinned; a flow made once whatever the feeds
(the steward's quarantine replay) is a row of FIXED_DEPLOYMENTS. Entrypoints are dotted
module paths into the installed package (`batchbridge.flows.<module>.<flow>`), so a
worker needs the package and the feed folder, not a checkout of this repository.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchbridge.config import UNPINNED_HOST_KEY, FeedConfig

TENANT_CONCURRENCY = 1
"""Flow runs of one tenant at a time (the concurrency limit of its work queue)."""

TENANT_LIMITS: dict[str, int] = {}
"""Tenants allowed more (or fewer) runs at once than TENANT_CONCURRENCY.

`--apply` sets every tenant queue's limit from here, so a limit changed by hand in
Prefect is reset by the next deploy: change it here instead.
"""


def feed_schedules(config: FeedConfig) -> list[dict[str, Any]]:
    """The feed's own `schedule` as a Prefect cron schedule (none: runs on demand only)."""
    if config.schedule is None:
        return []
    return [{"cron": config.schedule.cron, "timezone": config.schedule.timezone, "active": True}]


def arrival_check_schedules(config: FeedConfig) -> list[dict[str, Any]]:
    """Daily, 10 minutes after the partner's arrival deadline (07:00 without one).

    Daily rather than on the window's days only: the same flow checks key expiry.
    """
    hour, minute = 7, 0
    if config.alerts.arrival is not None:
        hour, minute = (int(part) for part in config.alerts.arrival.expected_by.split(":"))
        total = hour * 60 + minute + 10
        hour, minute = (total // 60) % 24, total % 60
    return [{"cron": f"{minute} {hour} * * *", "timezone": config.timezone, "active": True}]


HEALTH_CRON = "0 16 * * *"
"""Default daily time of a feed's health check, in the feed's zone: working hours, well
before a nightly run, so whoever is paged can still fix a key or a password in daylight."""


def _health_schedules(config: FeedConfig) -> list[dict[str, Any]]:
    """The health check's daily schedule for a feed: HEALTH_CRON in the feed's zone.

    For `batchbridge deploy`'s per-feed table (deployment `<feed>-health`, not bound to
    the tenant's work queue: a seconds-long check must not wait behind a nightly run).
    """
    timezone = config.schedule.timezone if config.schedule else config.timezone
    return [{"cron": HEALTH_CRON, "timezone": timezone, "active": True}]


def _every_feed(config: FeedConfig) -> bool:
    return True


def host_keys_pinned(config: FeedConfig) -> bool:
    """False while a host_keys list of the feed holds the placeholder `onboard scaffold` writes.

    Such a feed gets no deployment at all: each of its flows would connect to a server
    not trusted yet, so its nightly run and health check would fail and page every day,
    and its arrival check would report a partner not sending files yet as late. The
    onboarding steps run `health` by hand instead; `batchbridge deploy` after pinning
    adds them all.
    """
    pinned = [config.source.host_keys] if config.source.kind == "sftp" else []
    pinned += [target.host_keys for target in config.targets if target.kind == "sftp"]
    return all(UNPINNED_HOST_KEY not in keys for keys in pinned)


@dataclass(frozen=True)
class FeedDeployment:
    """A deployment made for each feed, named `<feed>-<suffix>`, with parameters {feed}.

    `description` may use {feed}, {tenant} and {about} (the feed's description).
    A tenant-bound deployment runs in the tenant's queue and counts against its limit;
    a light check that must not wait behind a long nightly run sets tenant_bound=False.
    """

    suffix: str
    entrypoint: str
    description: str
    schedules: Callable[[FeedConfig], list[dict[str, Any]]]
    applies: Callable[[FeedConfig], bool] = _every_feed
    tenant_bound: bool = True
    concurrency_limit: int | None = None
    comment: str = ""


@dataclass(frozen=True)
class FixedDeployment:
    """A deployment made once, whatever the feeds (e.g. the steward's replay)."""

    name: str
    entrypoint: str
    description: str
    tags: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    comment: str = ""


FEED_DEPLOYMENTS: tuple[FeedDeployment, ...] = (
    FeedDeployment(
        suffix="nightly",
        entrypoint="batchbridge.flows.nightly.nightly_feed",
        description="{about}.",
        schedules=feed_schedules,
        # Never two runs of one feed at once (a UI rerun during the nightly run waits
        # for it): the ledger then sees each file claimed by one run at a time.
        concurrency_limit=1,
        comment=(
            "Safe to rerun from the UI: a retry reprocesses what is not done; a custom run\n"
            "with files=[...] and force=true reprocesses exactly those files (marked rerun)."
        ),
    ),
    FeedDeployment(
        suffix="check-arrivals",
        entrypoint="batchbridge.flows.arrivals.check_arrivals",
        description="Late-file (partner SLA) and key-expiry alerts for {feed}.",
        schedules=arrival_check_schedules,
        # Not in the tenant's queue: a late-file alert must not wait behind a nightly run.
        tenant_bound=False,
    ),
    FeedDeployment(
        suffix="health",
        entrypoint="batchbridge.flows.health.health_check",
        description=(
            "Daily health check of {feed}: SFTP host key and login, PGP keys and expiry, "
            "secrets, mappings, target canary write."
        ),
        schedules=_health_schedules,
        tenant_bound=False,
    ),
)
"""Deployments made per feed. Add a row for a per-feed flow (arrival check, health check)."""

FIXED_DEPLOYMENTS: tuple[FixedDeployment, ...] = (
    FixedDeployment(
        name="replay-quarantine",
        entrypoint="batchbridge.flows.replay.replay_quarantine",
        description="Re-validate quarantined rows with the current rules and load those that pass.",
        tags=("stewardship",),
        comment=(
            "Run by data stewards from the UI after fixing rows or updating a mapping table.\n"
            "Prefect OSS does not authenticate UI users: `requested_by` is the accountable\n"
            "identity (a person with the steward role in deployments/stewards.yaml), and it is\n"
            "checked and written to the audit log. Put the UI behind an authenticating proxy."
        ),
    ),
)
"""Deployments made once. Add a row for a flow that is not per feed."""
