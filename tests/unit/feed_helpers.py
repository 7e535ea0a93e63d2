"""A lab_results feed on a local folder and SQLite, with pgpy-made keys: no servers, no gpg."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from batchbridge.demo.lab_data import mapping_frame
from batchbridge.demo.scenario import LAB_TARGET_COLUMNS


def pgp_key(*, expires_in: timedelta | None = None, passphrase: str | None = None) -> Any:
    """A fresh ed25519 signing key with a cv25519 encryption subkey (pgpy, no gpg binary)."""
    import pgpy
    from pgpy.constants import (
        CompressionAlgorithm,
        EllipticCurveOID,
        HashAlgorithm,
        KeyFlags,
        PubKeyAlgorithm,
        SymmetricKeyAlgorithm,
    )

    key = pgpy.PGPKey.new(PubKeyAlgorithm.EdDSA, EllipticCurveOID.Ed25519)
    key.add_uid(
        pgpy.PGPUID.new("Health Test", email="health@example.test"),
        usage={KeyFlags.Sign, KeyFlags.Certify},
        hashes=[HashAlgorithm.SHA256],
        ciphers=[SymmetricKeyAlgorithm.AES256],
        compression=[CompressionAlgorithm.ZLIB],
        key_expiration=expires_in,
    )
    subkey = pgpy.PGPKey.new(PubKeyAlgorithm.ECDH, EllipticCurveOID.Curve25519)
    key.add_subkey(subkey, usage={KeyFlags.EncryptCommunications, KeyFlags.EncryptStorage})
    if passphrase:
        key.protect(passphrase, SymmetricKeyAlgorithm.AES256, HashAlgorithm.SHA256)
    return key


def write_feed(
    root: Path,
    *,
    source: dict[str, Any] | None = None,
    partner_expires_in: timedelta | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A lab_results feed on a local folder with a SQLite target; secrets are files."""
    secrets_dir, feeds, inbox = root / "secrets", root / "feeds", root / "inbox"
    for folder in (secrets_dir, feeds, inbox):
        folder.mkdir(parents=True, exist_ok=True)
    ours = pgp_key(passphrase="pw")
    partner = pgp_key(expires_in=partner_expires_in)
    (secrets_dir / "ours.asc").write_text(str(ours))
    (secrets_dir / "passphrase").write_text("pw")
    (secrets_dir / "partner.asc").write_text(str(partner.pubkey))
    (secrets_dir / "pseudonym").write_text(secrets.token_hex(32))
    (secrets_dir / "quarantine").write_text(secrets.token_hex(32))
    mapping_frame().write_csv(root / "loinc.csv")
    feed: dict[str, Any] = {
        "feed": "lab_results",
        "tenant": "acme_lab",
        "schema": "lab_results",
        "timezone": "America/Chicago",  # the zone generate_lab_rows writes naive times in
        "source": source or {"kind": "local", "path": "../inbox", "glob": "*.pgp"},
        "pgp": {
            "private_key": "file:../secrets/ours.asc",
            "passphrase": "file:../secrets/passphrase",
            "partner_public_keys": ["file:../secrets/partner.asc"],
        },
        "mappings": {"local_test_code": "../loinc.csv"},
        "pseudonym_key": "file:../secrets/pseudonym",
        "quarantine_key": "file:../secrets/quarantine",
        "targets": [
            {
                "name": "warehouse",
                "kind": "sqlite",
                "path": "../warehouse.db",
                "table": "lab_result",
                "columns": LAB_TARGET_COLUMNS,
            }
        ],
        **(extra or {}),
    }
    (feeds / "lab_results.yaml").write_text(yaml.safe_dump(feed, sort_keys=False))
    return feeds
