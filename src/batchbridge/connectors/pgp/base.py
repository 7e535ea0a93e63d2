"""The Decryptor protocol: decrypt an OpenPGP file and prove who signed it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr


@dataclass(frozen=True)
class DecryptorKeys:
    """Our private key and the partner's pinned public keys, all ASCII-armored."""

    private_key: SecretStr
    passphrase: SecretStr | None
    partner_public_keys: tuple[str, ...]


@dataclass(frozen=True)
class DecryptorLimits:
    """Caps that protect memory: plaintext bytes and plaintext/ciphertext ratio."""

    max_plaintext_bytes: int = 4 * 1024**3
    max_compression_ratio: float = 200.0


@dataclass(frozen=True)
class VerifiedPlaintext:
    """Plaintext handed on only after signature and integrity checks passed.

    `data` is patient data: never log it, never return it from a Prefect task whose
    result is persisted, never write it to disk.
    """

    data: bytes
    signer_fingerprint: str
    signed_at: datetime | None

    def __repr__(self) -> str:
        return (
            f"VerifiedPlaintext(<{len(self.data)} bytes>, signer={self.signer_fingerprint}, "
            f"signed_at={self.signed_at})"
        )


class Decryptor(Protocol):
    """Decrypts one message; raises SignatureError/IntegrityError/PlaintextLimitError."""

    def decrypt_and_verify(self, path: Path) -> VerifiedPlaintext:
        """Decrypt `path`, require a valid signature by a pinned partner key and an MDC."""
        ...
