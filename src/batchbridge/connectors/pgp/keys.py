"""Load pinned OpenPGP keys with pgpy and tell whether they are revoked or (nearly) expired."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pgpy
from pgpy.constants import SignatureType

from batchbridge.errors import ConfigError

# pgpy ships no type hints; its keys are handled as Any behind these helpers.
PGPKey = Any

_CERTIFICATIONS = frozenset(
    {
        SignatureType.Generic_Cert,
        SignatureType.Persona_Cert,
        SignatureType.Casual_Cert,
        SignatureType.Positive_Cert,
        SignatureType.DirectlyOnKey,
    }
)


def _parse_blob(armored: str, what: str) -> list[PGPKey]:
    """Every primary key in one armored block (a block may hold several)."""
    try:
        first, others = pgpy.PGPKey.from_blob(armored)
    except Exception as exc:  # pgpy raises ValueError, PGPError, KeyError… on bad input
        raise ConfigError(f"{what} is not a readable OpenPGP key ({type(exc).__name__})") from None
    found: dict[str, PGPKey] = {str(first.fingerprint): first}
    for key in others.values():
        if key.is_primary and str(key.fingerprint) not in found:
            found[str(key.fingerprint)] = key
    return list(found.values())


def load_public_keys(armored_keys: Iterable[str]) -> list[PGPKey]:
    """Parse the partner's pinned public keys; a private key or a bad block is a ConfigError."""
    keys: list[PGPKey] = []
    for index, armored in enumerate(armored_keys):
        what = f"partner public key #{index + 1}"
        for key in _parse_blob(armored, what):
            if not key.is_public:
                raise ConfigError(f"{what} is a private key; pin only the partner's public key")
            keys.append(key)
    if not keys:
        raise ConfigError("no partner public key is configured")
    return keys


def load_private_key(armored: str) -> PGPKey:
    """Parse our private key (still locked: pgpy unlocks it only while it is used)."""
    keys = _parse_blob(armored, "our private key")
    if len(keys) != 1 or keys[0].is_public:
        raise ConfigError("our private key must be exactly one OpenPGP private key")
    return keys[0]


def _latest(signatures: Iterable[Any]) -> Any | None:
    return max(signatures, key=lambda sig: sig.created, default=None)


def _self_signatures(key: PGPKey) -> Iterator[Any]:
    """Self-certifications (primary) or binding signatures (subkey) issued by the primary."""
    if key.is_primary:
        keyid = key.fingerprint.keyid
        for uid in key.userids:
            yield from (
                s for s in uid._signatures if s.type in _CERTIFICATIONS and s.signer == keyid
            )
        yield from (
            s
            for s in key._signatures
            if s.type == SignatureType.DirectlyOnKey and s.signer == keyid
        )
    else:
        keyid = key.parent.fingerprint.keyid
        yield from (
            s
            for s in key._signatures
            if s.type == SignatureType.Subkey_Binding and s.signer == keyid
        )


def key_expires_at(key: PGPKey) -> datetime | None:
    """When `key` (primary or subkey) expires by its latest self-signature; None = never.

    A subkey also expires with its primary. pgpy's own `expires_at` ignores subkey binding
    signatures and which self-signature is the latest, so this is computed here.
    """
    latest = _latest(_self_signatures(key))
    own: datetime | None = None
    if latest is not None and latest.key_expiration is not None:
        own = key.created + latest.key_expiration
    if key.is_primary:
        return own
    parent = key_expires_at(key.parent)
    candidates = [moment for moment in (own, parent) if moment is not None]
    return min(candidates) if candidates else None


def key_is_revoked(key: PGPKey) -> bool:
    """True when the key, or for a subkey its primary, carries a revocation signature.

    The revocation signature is not verified: pinned keys come from our own config, and a
    bogus revocation can only make us refuse a file (fail closed), never accept one.
    """
    if any(True for _ in key.revocation_signatures):
        return True
    return not key.is_primary and key_is_revoked(key.parent)


def iter_key_and_subkeys(key: PGPKey) -> Iterator[PGPKey]:
    """The primary key, then its subkeys."""
    yield key
    yield from key.subkeys.values()


def key_expiries(armored_keys: Iterable[str]) -> list[tuple[str, datetime | None]]:
    """(fingerprint, expires_at or None) for every key and subkey, for expiry health checks.

    Accepts public or private armored keys; a subkey's date already accounts for its
    primary's. Times are timezone-aware UTC.
    """
    result: list[tuple[str, datetime | None]] = []
    for index, armored in enumerate(armored_keys):
        for key in _parse_blob(armored, f"key #{index + 1}"):
            for part in iter_key_and_subkeys(key):
                expires = key_expires_at(part)
                result.append(
                    (
                        str(part.fingerprint).replace(" ", ""),
                        expires.astimezone(UTC) if expires else None,
                    )
                )
    return result
