"""Health checks of a feed's PGP keys: ours decrypts, the partner's verify, and for how long."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from batchbridge.config import LoadedFeed
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.monitoring.health_model import CheckResult, Severity, guarded


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
