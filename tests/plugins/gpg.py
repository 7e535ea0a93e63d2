"""pytest fixtures: a real gpg keyring with our key and partner keys, and a message factory."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

import pytest
from pydantic import SecretStr

from batchbridge.connectors.pgp.base import DecryptorKeys
from batchbridge.demo.gpg import CompressAlgo, GpgKeyring, gpg_available
from tests.plugins.missing import missing_part

Signer = Literal["partner", "stranger", "revoked", "expired"]
Recipient = Literal["ours", "stranger"]

CANARY = "CANARY-ZEBULON-QUIXOTE"

# Keys are backdated so that the "expired" partner key can sign a message while it was
# still valid: gpg only uses keys that exist at the (faked) signing time.
_KEYS_CREATED_DAYS_AGO = 30
_EXPIRED_KEY_CREATED_DAYS_AGO = 10  # with a one-day validity: expired nine days ago
_EXPIRED_KEY_SIGNED_DAYS_AGO = 9.5


@dataclass(frozen=True)
class GpgTestKeys:
    """Session keys: ours (passphrase-protected) and the partner-side keys the tests pin."""

    keyring: GpgKeyring
    our_fpr: str
    our_passphrase: str
    our_secret: str
    partner_fpr: str
    partner_public: str
    stranger_fpr: str
    stranger_public: str
    revoked_fpr: str
    revoked_public: str
    expired_fpr: str
    expired_public: str

    def fingerprint(self, who: Signer | Recipient) -> str:
        """Fingerprint of a named key."""
        return {
            "ours": self.our_fpr,
            "partner": self.partner_fpr,
            "stranger": self.stranger_fpr,
            "revoked": self.revoked_fpr,
            "expired": self.expired_fpr,
        }[who]

    def decryptor_keys(
        self, *pinned: str, passphrase: str | Literal[False] | None = False
    ) -> DecryptorKeys:
        """Keys as a feed would resolve them: our private key + the given pinned public keys.

        `passphrase=False` (default) uses the right passphrase; a string or None overrides it.
        """
        chosen = self.our_passphrase if passphrase is False else passphrase
        return DecryptorKeys(
            private_key=SecretStr(self.our_secret),
            passphrase=SecretStr(chosen) if chosen is not None else None,
            partner_public_keys=pinned or (self.partner_public,),
        )


class MakeMessage(Protocol):
    """Signature of the `make_message` fixture."""

    def __call__(
        self,
        plaintext: bytes | Path,
        *,
        signer: Signer | None = "partner",
        recipient: Recipient = "ours",
        armor: bool = False,
        compress_algo: CompressAlgo = "zlib",
        compress_level: int | None = None,
        mdc: bool = True,
        name: str | None = None,
    ) -> Path: ...


def lab_plaintext(rows: int = 400, *, seed: int = 7) -> bytes:
    """A CSV-like plaintext with a planted canary; varied enough to compress only modestly."""
    rng = random.Random(seed)
    lines = ["record_id,patient_mrn,patient_last_name,result_value"]
    for index in range(rows):
        name = CANARY if index == rows // 2 else "".join(rng.choices("ABCDEFGHIJKLMNOP", k=9))
        lines.append(f"R{index:06d},{rng.randrange(10**9):09d},{name},{rng.random() * 500:.3f}")
    return ("\n".join(lines) + "\n").encode("utf-8")


@pytest.fixture(scope="session")
def gpg_binary() -> str:
    """The gpg binary; tests skip without it locally but fail in CI (CI must have it)."""
    if not gpg_available("gpg"):
        missing_part("gpg is not installed")
    return "gpg"


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory, gpg_binary: str) -> Iterator[GpgTestKeys]:
    """One partner-side keyring holding every key the tests need (made once per session)."""
    keyring = GpgKeyring(tmp_path_factory.mktemp("gpg") / "partner", gpg_binary=gpg_binary)
    now = datetime.now(UTC)
    created = now - timedelta(days=_KEYS_CREATED_DAYS_AGO)
    passphrase = "correct horse battery staple"
    try:
        ours = keyring.generate_key(
            "batchbridge test",
            "inbound@batchbridge.test",
            passphrase=passphrase,
            created_at=created,
        )
        partner = keyring.generate_key("Acme Lab", "signing@acme.test", created_at=created)
        stranger = keyring.generate_key("Mallory", "mallory@stranger.test", created_at=created)
        revoked = keyring.generate_key("Acme Old", "old@acme.test", created_at=created)
        expired = keyring.generate_key(
            "Acme Expired",
            "expired@acme.test",
            expire="1d",
            created_at=now - timedelta(days=_EXPIRED_KEY_CREATED_DAYS_AGO),
        )
        yield GpgTestKeys(
            keyring=keyring,
            our_fpr=ours,
            our_passphrase=passphrase,
            our_secret=keyring.export_secret(ours, passphrase),
            partner_fpr=partner,
            partner_public=keyring.export_public(partner),
            stranger_fpr=stranger,
            stranger_public=keyring.export_public(stranger),
            revoked_fpr=revoked,
            # Revoked as published; the keyring itself can still sign with it (see helper).
            revoked_public=keyring.export_revoked_public(revoked),
            expired_fpr=expired,
            expired_public=keyring.export_public(expired),
        )
    finally:
        keyring.close()


@pytest.fixture
def make_message(gpg_keys: GpgTestKeys, tmp_path: Path) -> MakeMessage:
    """Factory: encrypt + sign a plaintext the way a partner's gpg would, into tmp_path."""
    counter = iter(range(1_000_000))

    def make(
        plaintext: bytes | Path,
        *,
        signer: Signer | None = "partner",
        recipient: Recipient = "ours",
        armor: bool = False,
        compress_algo: CompressAlgo = "zlib",
        compress_level: int | None = None,
        mdc: bool = True,
        name: str | None = None,
    ) -> Path:
        out = tmp_path / (name or f"msg-{next(counter)}.pgp")
        signed_at = None
        if signer == "expired":
            signed_at = datetime.now(UTC) - timedelta(days=_EXPIRED_KEY_SIGNED_DAYS_AGO)
        return gpg_keys.keyring.encrypt_and_sign(
            plaintext,
            recipient_fpr=gpg_keys.fingerprint(recipient),
            signer_fpr=gpg_keys.fingerprint(signer) if signer else None,
            out=out,
            armor=armor,
            compress_algo=compress_algo,
            compress_level=compress_level,
            mdc=mdc,
            signed_at=signed_at,
        )

    return make
