"""Health checks for one feed: SFTP, host key, credentials, PGP keys, secrets, mappings, targets.

Each check returns CheckResults whose details carry host names, ports, key fingerprints,
reference names, counts and error reasons, never patient data. Checks need the network
(they are "pure" in the sense of the stages: no Prefect, plain inputs and outputs) and
take their connectors as parameters so tests can substitute them.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal, ParamSpec

import paramiko
from pydantic import SecretStr

from batchbridge.config import (
    UNPINNED_HOST_KEY,
    FeedConfig,
    LoadedFeed,
    LocalSourceConfig,
    SftpSourceConfig,
    TargetConfig,
    load_feed,
)
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.sources.sftp import SftpProbe, SftpSource, server_host_key
from batchbridge.connectors.ssh.host_keys import (
    describe_key,
    disabled_host_key_algorithms,
    parse_host_keys,
    verify_host_key,
)
from batchbridge.connectors.targets.base import CANARY_TABLE, SupportsHealthCanary, Target
from batchbridge.connectors.targets.registry import open_target
from batchbridge.errors import BatchbridgeError, ConfigError, TransientSourceError
from batchbridge.ledger.crypto import RowCipher
from batchbridge.validations.mapping import load_mapping
from batchbridge.validations.registry import get_schema

Severity = Literal["ok", "warning", "error", "skipped"]
P = ParamSpec("P")


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome. `ok` is False for errors and for checks skipped after one.

    severity: ok | warning (passes, needs attention soon) | error | skipped (not run
    because a check it depends on failed).
    """

    name: str
    ok: bool
    severity: Severity
    detail: str

    @classmethod
    def passed(cls, name: str, detail: str) -> CheckResult:
        return cls(name, True, "ok", detail)

    @classmethod
    def warning(cls, name: str, detail: str) -> CheckResult:
        return cls(name, True, "warning", detail)

    @classmethod
    def failed(cls, name: str, detail: str) -> CheckResult:
        return cls(name, False, "error", detail)

    @classmethod
    def skipped(cls, name: str, detail: str) -> CheckResult:
        return cls(name, False, "skipped", detail)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "severity": self.severity, "detail": self.detail}


@dataclass
class FeedHealth:
    """Every check of one feed."""

    feed: str
    tenant: str | None
    checked_at: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.severity == "error"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.severity == "warning"]

    @property
    def status(self) -> str:
        """failed (a check failed), warning (only warnings) or ok."""
        if self.failed:
            return "failed"
        return "warning" if self.warnings else "ok"

    def counts(self) -> dict[str, int]:
        severities: tuple[Severity, ...] = ("ok", "warning", "error", "skipped")
        return {s: sum(c.severity == s for c in self.checks) for s in severities}

    def to_dict(self) -> dict[str, object]:
        return {
            "feed": self.feed,
            "tenant": self.tenant,
            "checked_at": self.checked_at,
            "status": self.status,
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }


def guarded(
    name: str,
) -> Callable[[Callable[P, list[CheckResult]]], Callable[P, list[CheckResult]]]:
    """Turn any exception escaping a check into a failed CheckResult named `name`.

    Our errors are written PHI-free and keep their message; anything else (a driver or
    library error that might quote data) is reduced to its class name.
    """

    def decorate(fn: Callable[P, list[CheckResult]]) -> Callable[P, list[CheckResult]]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> list[CheckResult]:
            try:
                return fn(*args, **kwargs)
            except BatchbridgeError as exc:
                return [CheckResult.failed(name, f"[{exc.reason}] {exc}")]
            except Exception as exc:
                return [
                    CheckResult.failed(name, f"unexpected {type(exc).__name__} (message withheld)")
                ]

        return wrapper

    return decorate


# -- secrets -------------------------------------------------------------------------


def feed_secret_references(config: FeedConfig) -> list[str]:
    """Every secret reference a feed names, once each, in the order they appear."""
    refs: list[str] = []
    source = config.source
    if isinstance(source, SftpSourceConfig):
        refs.append(source.private_key)
        if source.private_key_passphrase:
            refs.append(source.private_key_passphrase)
    refs.append(config.pgp.private_key)
    if config.pgp.passphrase:
        refs.append(config.pgp.passphrase)
    refs += config.pgp.partner_public_keys
    refs += [config.pseudonym_key, config.quarantine_key, *config.quarantine_previous_keys]
    refs += [t.url for t in config.targets if t.kind == "postgres"]
    if config.alerts.webhook:
        refs.append(config.alerts.webhook)
    return list(dict.fromkeys(refs))


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


# -- PGP keys -------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_pgpy() -> Iterator[None]:
    # pgpy 0.6 uses cryptography names deprecated since (TripleDES, CFB…): nothing an
    # operator can act on, so the health output is not cluttered with them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has been moved to cryptography.hazmat")
        yield


def assess_key_expiry(
    label: str,
    expiries: Sequence[datetime | None],
    *,
    now: datetime,
    warning_days: int,
) -> tuple[Severity, str]:
    """Severity and detail for one key from the expiry dates of its usable parts.

    `expiries` holds, for each part (primary or subkey) able to do the job, when it
    expires (None: never). The key works until its last such part expires, so that
    date counts: expired is an error, within `warning_days` a warning.
    """
    if not expiries:
        return "error", f"{label}: no unrevoked part of the key has the usage flag needed"
    if any(moment is None for moment in expiries):
        return "ok", f"{label}: does not expire"
    last = max(moment for moment in expiries if moment is not None)
    day = last.astimezone(UTC).date().isoformat()
    if last <= now:
        return "error", f"{label}: expired on {day}"
    days_left = (last - now) / timedelta(days=1)
    if days_left <= warning_days:
        return "warning", f"{label}: expires on {day} (in {days_left:.0f} days)"
    return "ok", f"{label}: expires on {day}"


_ENCRYPT_FLAGS = frozenset({"EncryptCommunications", "EncryptStorage"})
_SIGN_FLAGS = frozenset({"Sign"})


def _flag_names(part: Any) -> set[str]:
    try:
        # pgpy has no public accessor for key flags (nor types): read its own helper.
        return {flag.name for flag in part._get_key_flags()}
    except Exception:
        return set()


def _capable_expiries(key: Any, flags: frozenset[str]) -> list[datetime | None]:
    """Expiry of each unrevoked part of `key` whose key flags include one of `flags`."""
    from batchbridge.connectors.pgp import keys as pgp_keys

    parts = [p for p in pgp_keys.iter_key_and_subkeys(key) if not pgp_keys.key_is_revoked(p)]
    named = [(part, _flag_names(part)) for part in parts]
    capable = [part for part, names in named if names & flags]
    if not capable and all(not names - {"Certify"} for _, names in named):
        capable = parts  # a key without usage flags (old software): any part may be used
    return [_aware(pgp_keys.key_expires_at(part)) for part in capable]


def _aware(moment: datetime | None) -> datetime | None:
    # pgpy gives naive UTC datetimes; compare them as UTC, not as local time.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _short(fingerprint: str) -> str:
    return fingerprint.replace(" ", "")[-16:]


@guarded("pgp.our_key")
def check_our_pgp_key(loaded: LoadedFeed, *, now: datetime) -> list[CheckResult]:
    """Our private key parses, its passphrase unlocks it, and it can decrypt for a while yet."""
    with _quiet_pgpy():
        return _our_pgp_key(loaded, now=now)


def _our_pgp_key(loaded: LoadedFeed, *, now: datetime) -> list[CheckResult]:
    from batchbridge.connectors.pgp import keys as pgp_keys

    pgp = loaded.config.pgp
    armored = resolve_secret(pgp.private_key, base_dir=loaded.base_dir).get_secret_value()
    key = pgp_keys.load_private_key(armored)
    label = f"our key {_short(str(key.fingerprint))}"
    if pgp_keys.key_is_revoked(key):
        return [CheckResult.failed("pgp.our_key", f"{label}: revoked")]
    if key.is_protected:
        if pgp.passphrase is None:
            return [
                CheckResult.failed(
                    "pgp.our_key", f"{label}: passphrase-protected but no passphrase configured"
                )
            ]
        passphrase = resolve_secret(pgp.passphrase, base_dir=loaded.base_dir)
        try:
            with key.unlock(passphrase.get_secret_value()):
                pass
        except Exception:
            return [CheckResult.failed("pgp.our_key", f"{label}: the passphrase was rejected")]
    severity, detail = assess_key_expiry(
        label,
        _capable_expiries(key, _ENCRYPT_FLAGS),
        now=now,
        warning_days=pgp.key_expiry_warning_days,
    )
    return [CheckResult("pgp.our_key", severity != "error", severity, detail)]


@guarded("pgp.partner_keys")
def check_partner_pgp_keys(loaded: LoadedFeed, *, now: datetime) -> list[CheckResult]:
    """Each pinned partner key parses, is public, unrevoked and can sign for a while yet.

    One result per key. An expired or revoked key is an error only when no other pinned
    key is still valid; otherwise a warning to remove it (rotation overlap is normal).
    """
    with _quiet_pgpy():
        return _partner_pgp_keys(loaded, now=now)


def _partner_pgp_keys(loaded: LoadedFeed, *, now: datetime) -> list[CheckResult]:
    from batchbridge.connectors.pgp import keys as pgp_keys

    pgp = loaded.config.pgp
    armored = [
        resolve_secret(ref, base_dir=loaded.base_dir).get_secret_value()
        for ref in pgp.partner_public_keys
    ]
    assessed: list[tuple[str, Severity, str]] = []
    for index, key in enumerate(pgp_keys.load_public_keys(armored), start=1):
        name = f"pgp.partner_key[{index}]"
        label = f"partner key {_short(str(key.fingerprint))}"
        if pgp_keys.key_is_revoked(key):
            assessed.append((name, "error", f"{label}: revoked"))
            continue
        severity, detail = assess_key_expiry(
            label,
            _capable_expiries(key, _SIGN_FLAGS),
            now=now,
            warning_days=pgp.key_expiry_warning_days,
        )
        assessed.append((name, severity, detail))
    any_valid = any(severity != "error" for _, severity, _ in assessed)
    results = []
    for name, severity, detail in assessed:
        if severity == "error" and any_valid:
            severity, detail = "warning", f"{detail}; another pinned key is valid: remove this one"
        results.append(CheckResult(name, severity != "error", severity, detail))
    return results


# -- source ---------------------------------------------------------------------------

HostKeyFetcher = Callable[..., paramiko.PKey]
SourceOpener = Callable[[SftpSourceConfig, Path], SftpSource]


def _fetch_with_retries(
    fetch: HostKeyFetcher,
    config: SftpSourceConfig,
    disabled: Sequence[str],
    sleep: Callable[[float], None],
) -> paramiko.PKey:
    # A dropped handshake gets the same bounded retries a run would; a refused key does not.
    for attempt in range(1, config.max_attempts + 1):
        try:
            return fetch(
                config.host,
                config.port,
                disabled_algorithms=disabled,
                timeout=config.connect_timeout_seconds,
            )
        except TransientSourceError:
            if attempt == config.max_attempts:
                raise
            sleep(min(2.0**attempt, 30.0))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def check_sftp(
    loaded: LoadedFeed,
    *,
    fetch_host_key: HostKeyFetcher = server_host_key,
    open_sftp: SourceOpener | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CheckResult]:
    """sftp.reachable, sftp.host_key, sftp.auth and sftp.remote_dir for an SFTP source.

    The host key is fetched without authenticating and compared with the pinned keys;
    credentials are only offered to a server whose key is pinned.
    """
    config = loaded.config.source
    assert isinstance(config, SftpSourceConfig)
    where = f"{config.host}:{config.port}"
    results: list[CheckResult] = []

    pinned: list[paramiko.PKey] | None = None
    pin_problem: str | None = None
    try:
        pinned = parse_host_keys(config.host_keys)
    except ConfigError as exc:
        pin_problem = str(exc)
    if UNPINNED_HOST_KEY in config.host_keys:
        pin_problem = (
            f"no host key pinned yet: run `batchbridge onboard host-key {config.host} "
            f"--port {config.port}`, confirm the fingerprint with the partner out of band, "
            f"then pin it with `--pin {loaded.config.feed} --confirmed`"
        )
    disabled = disabled_host_key_algorithms(pinned) if pinned else []

    try:
        try:
            offered = _fetch_with_retries(fetch_host_key, config, disabled, sleep)
        except BatchbridgeError as exc:
            if exc.reason != "host_key_type":
                raise
            # The server holds none of the pinned key types: the key changed. Ask for
            # whatever it offers, so the failure can name that key's fingerprint.
            offered = _fetch_with_retries(fetch_host_key, config, [], sleep)
    except BatchbridgeError as exc:
        results.append(CheckResult.failed("sftp.reachable", f"[{exc.reason}] {exc}"))
        results.append(CheckResult.skipped("sftp.host_key", "server not reachable"))
        return results + _skipped_after_host_key("the host key could not be verified")
    results.append(
        CheckResult.passed("sftp.reachable", f"SSH handshake with {where} ({offered.get_name()})")
    )

    if pin_problem is not None or not pinned:
        results.append(
            CheckResult.failed(
                "sftp.host_key",
                f"{pin_problem or 'no host key pinned'}; the server offers {describe_key(offered)}",
            )
        )
        return results + _skipped_after_host_key("no valid pinned host key")
    try:
        verify_host_key(offered, pinned, where)
    except BatchbridgeError as exc:
        # HostKeyError's text names the offered and the pinned fingerprints.
        results.append(CheckResult.failed("sftp.host_key", str(exc)))
        return results + _skipped_after_host_key("the host key is not pinned")
    results.append(CheckResult.passed("sftp.host_key", f"pinned key {describe_key(offered)}"))

    opener = open_sftp or (lambda cfg, base: SftpSource(cfg, base_dir=base, sleep=sleep))
    with opener(config, loaded.base_dir) as source:
        probe = source.probe()
    return results + _probe_results(probe, config)


def _skipped_after_host_key(why: str) -> list[CheckResult]:
    detail = f"not attempted: {why} (credentials go only to a pinned server)"
    return [
        CheckResult.skipped("sftp.auth", detail),
        CheckResult.skipped("sftp.remote_dir", detail),
    ]


def _probe_results(probe: SftpProbe, config: SftpSourceConfig) -> list[CheckResult]:
    error = probe.error
    if not probe.authenticated:
        assert error is not None
        return [
            CheckResult.failed("sftp.auth", f"[{error.reason}] {error}"),
            CheckResult.skipped("sftp.remote_dir", "not attempted: not logged in"),
        ]
    auth = CheckResult.passed("sftp.auth", f"logged in as {config.username!r} with the key")
    if error is not None:
        return [auth, CheckResult.failed("sftp.remote_dir", f"[{error.reason}] {error}")]
    refused = f", {probe.refused} refused (unsafe name or not a file)" if probe.refused else ""
    return [
        auth,
        CheckResult.passed(
            "sftp.remote_dir",
            f"{config.remote_dir} listable: {probe.matching} file(s) match {config.glob!r}"
            + refused,
        ),
    ]


@guarded("source.folder")
def check_local_source(loaded: LoadedFeed) -> list[CheckResult]:
    """A local source folder exists and can be listed."""
    config = loaded.config.source
    assert isinstance(config, LocalSourceConfig)
    folder = loaded.resolve_path(config.path)
    if not folder.is_dir():
        return [CheckResult.failed("source.folder", f"{folder} is not a folder")]
    matching = sum(1 for entry in folder.iterdir() if fnmatchcase(entry.name, config.glob))
    return [
        CheckResult.passed(
            "source.folder", f"{folder} listable: {matching} file(s) match {config.glob!r}"
        )
    ]


# -- targets --------------------------------------------------------------------------

TargetOpener = Callable[[LoadedFeed, TargetConfig], Target]


def check_target(
    loaded: LoadedFeed, target_config: TargetConfig, *, open_: TargetOpener = open_target
) -> list[CheckResult]:
    """The target accepts a write + commit (canary row) and its table has our columns."""
    name = f"target.{target_config.name}"

    @guarded(name)
    def run() -> list[CheckResult]:
        target = open_(loaded, target_config)
        try:
            if not isinstance(target, SupportsHealthCanary):
                return [CheckResult.skipped(name, "this target kind has no writability check")]
            target.check_writable(loaded.config.tenant)
            problem = _missing_columns(loaded, target_config, target)
        finally:
            target.close()
        if problem:
            return [CheckResult.failed(name, problem)]
        return [
            CheckResult.passed(
                name,
                f"wrote, read back and committed the {loaded.config.tenant} row of {CANARY_TABLE}",
            )
        ]

    return run()


def _missing_columns(loaded: LoadedFeed, config: TargetConfig, target: Target) -> str | None:
    # An existing table that lacks a configured column fails every load (batchbridge does
    # not alter tables): worth knowing before the night. A missing table is created.
    table_columns = getattr(target, "table_columns", None)
    if table_columns is None:
        return None
    present = set(table_columns())
    if not present:
        return None
    schema = get_schema(loaded.config.schema_name)
    wanted = list(dict.fromkeys([*schema.natural_key, *config.columns]))
    missing = [column for column in wanted if column not in present]
    if missing:
        table = getattr(config, "table", "?")
        return f"table {table} lacks columns {', '.join(missing)} (loads would fail)"
    return None


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
