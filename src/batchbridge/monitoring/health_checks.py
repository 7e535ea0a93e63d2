"""Run every health check of one feed; the config-level ones (secrets, mappings) live here.

The others live beside this module: health_source (SFTP reachable, host key, login,
folder), health_keys (PGP keys and their expiry) and health_targets (each target's own probe);
all return health_model's CheckResults. Details carry host names, ports, key
fingerprints, reference names, counts and error reasons, never patient data. Checks
need the network (they are "pure" in the sense of the stages: no Prefect, plain inputs
and outputs) and take their connectors as parameters so tests can substitute them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from batchbridge.config import (
    FeedConfig,
    LoadedFeed,
    SftpSourceConfig,
    load_feed,
    secret_references,
)
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.errors import BatchbridgeError
from batchbridge.ledger.crypto import RowCipher
from batchbridge.monitoring.health_keys import check_our_pgp_key, check_partner_pgp_keys
from batchbridge.monitoring.health_model import CheckResult, FeedHealth, guarded
from batchbridge.monitoring.health_source import check_local_source, check_sftp
from batchbridge.monitoring.health_targets import check_target
from batchbridge.validations.mapping import load_mapping
from batchbridge.validations.registry import get_schema

# FeedHealth is part of what run_feed_checks returns; callers may name it from here.
__all__ = [
    "FeedHealth",
    "check_mappings",
    "check_secrets",
    "feed_secret_references",
    "iter_feed_checks",
    "run_feed_checks",
]


# -- secrets -------------------------------------------------------------------------


def feed_secret_references(config: FeedConfig) -> list[str]:
    """Every secret reference a feed names, once each, in the order the config declares them."""
    return list(dict.fromkeys(use.ref for use in secret_references(config)))


@guarded("secrets")
def check_secrets(
    loaded: LoadedFeed, *, resolve: Callable[..., object] = resolve_secret
) -> list[CheckResult]:
    """Every referenced secret resolves to a non-empty value (values are never shown)."""
    config = loaded.config
    refs = feed_secret_references(config)
    quarantine_refs = {config.quarantine_key, *config.quarantine_previous_keys}
    problems: list[str] = []
    for ref in refs:
        try:
            value = resolve(ref, base_dir=loaded.base_dir)
            if ref in quarantine_refs and isinstance(value, SecretStr):
                RowCipher(value)  # refuses a key too weak to protect quarantined rows
        except BatchbridgeError as exc:
            problems.append(f"{ref}: {exc}" if ref not in str(exc) else str(exc))
    if problems:
        return [
            CheckResult.failed(
                "secrets", f"{len(problems)} of {len(refs)} not usable: " + "; ".join(problems)
            )
        ]
    return [CheckResult.passed("secrets", f"all {len(refs)} references resolve")]


# -- mapping tables -------------------------------------------------------------------


@guarded("mappings")
def check_mappings(loaded: LoadedFeed) -> list[CheckResult]:
    """The schema exists and every mapping table it needs loads (strictly)."""
    config = loaded.config
    schema = get_schema(config.schema_name)
    missing = [m for m in schema.required_mappings if m not in config.mappings]
    if missing:
        return [
            CheckResult.failed(
                "mappings", f"schema {schema.name} needs mappings {', '.join(missing)}"
            )
        ]
    sizes = []
    for name, path in config.mappings.items():
        table = load_mapping(loaded.resolve_path(path), schema.mapping_columns.get(name, ()))
        sizes.append(f"{name}: {table.height} codes ({path.name})")
    return [CheckResult.passed("mappings", "; ".join(sizes) or "none configured")]


# -- one feed, all checks -------------------------------------------------------------


def iter_feed_checks(
    loaded: LoadedFeed,
    *,
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[CheckResult]]:
    """Each group of checks for a loaded feed, in a stable order."""
    config = loaded.config
    if isinstance(config.source, SftpSourceConfig):
        yield guarded("sftp.reachable")(check_sftp)(loaded, sleep=sleep)
    else:
        yield check_local_source(loaded)
    yield check_our_pgp_key(loaded, now=now)
    yield check_partner_pgp_keys(loaded, now=now)
    yield check_secrets(loaded)
    yield check_mappings(loaded)
    for target in config.targets:
        yield check_target(loaded, target)


def run_feed_checks(
    feed: str,
    config_dir: Path,
    *,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FeedHealth:
    """Load the feed and run every check; a broken YAML is one failed `config` check."""
    moment = now or datetime.now(UTC)
    health = FeedHealth(
        feed=feed, tenant=None, checked_at=moment.isoformat(timespec="seconds"), checks=[]
    )
    try:
        loaded = load_feed(feed, config_dir)
    except BatchbridgeError as exc:
        health.checks.append(CheckResult.failed("config", f"[{exc.reason}] {exc}"))
        return health
    health.tenant = loaded.config.tenant
    health.checks.append(CheckResult.passed("config", f"{loaded.path.name} is valid"))
    for group in iter_feed_checks(loaded, now=moment, sleep=sleep):
        health.checks.extend(group)
    return health
