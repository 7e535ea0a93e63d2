"""Authenticated encryption (AES-GCM) of quarantined rows, with a key id per row."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from batchbridge.errors import BatchbridgeError

_HKDF_INFO = b"batchbridge quarantine row v1"
_LOOKUP_INFO = b"batchbridge quarantine record lookup v1"


class QuarantineDecryptError(BatchbridgeError):
    """Raised when a quarantined row cannot be decrypted (wrong key, row or tampering)."""

    reason = "quarantine_decrypt_failed"


@dataclass(frozen=True)
class EncryptedRow:
    """Ciphertext of one row and what is needed to open it again."""

    key_id: str
    nonce: bytes
    ciphertext: bytes


def row_associated_data(file_id: str, row_number: int) -> bytes:
    """Bind a ciphertext to its file and row: swapping ciphertexts between rows fails."""
    return f"{file_id}:{row_number}".encode()


class RowCipher:
    """Encrypts raw rows with a key derived from a secret; the key id names that secret."""

    def __init__(self, secret: SecretStr) -> None:
        material = secret.get_secret_value().strip().encode()
        if len(material) < 16:
            raise BatchbridgeError(
                "quarantine key secret is too short (need at least 16 characters)",
                reason="quarantine_key_weak",
            )
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
            material
        )
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]
        # A second key from the same secret: a blind index must not reuse the AEAD key.
        self._lookup_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_LOOKUP_INFO
        ).derive(material)

    def lookup_hash(self, value: str) -> str:
        """Keyed hash of a record id: found again by exact search, unreadable without the key."""
        return hmac.new(self._lookup_key, value.strip().encode(), hashlib.sha256).hexdigest()

    def encrypt(self, row: dict[str, str | None], associated_data: bytes) -> EncryptedRow:
        """Encrypt one row (column -> raw string) under a fresh 96-bit nonce."""
        nonce = os.urandom(12)
        plaintext = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()
        return EncryptedRow(
            self.key_id, nonce, self._aead.encrypt(nonce, plaintext, associated_data)
        )

    def decrypt(self, encrypted: EncryptedRow, associated_data: bytes) -> dict[str, str | None]:
        """Open a row; a wrong key, row binding or tampered ciphertext raises."""
        if encrypted.key_id != self.key_id:
            raise QuarantineDecryptError(
                f"row was encrypted with key {encrypted.key_id}, this key is {self.key_id}"
            )
        try:
            plaintext = self._aead.decrypt(encrypted.nonce, encrypted.ciphertext, associated_data)
        except InvalidTag:
            raise QuarantineDecryptError(
                "quarantined row failed authentication (tampered, or bound to another row)"
            ) from None
        row: dict[str, str | None] = json.loads(plaintext)
        return row


class QuarantineKeyring:
    """The current row key plus earlier ones, so a rotation leaves old rows readable."""

    def __init__(self, current: RowCipher, previous: list[RowCipher] | None = None) -> None:
        self.current = current
        self._by_id = {c.key_id: c for c in [*(previous or []), current]}

    @property
    def key_ids(self) -> list[str]:
        return list(self._by_id)

    def lookup_hashes(self, value: str) -> set[str]:
        """The record-id hash under every known key (rows keep the hash of their key)."""
        return {cipher.lookup_hash(value) for cipher in self._by_id.values()}

    def encrypt(self, row: dict[str, str | None], associated_data: bytes) -> EncryptedRow:
        """Encrypt with the current key."""
        return self.current.encrypt(row, associated_data)

    def decrypt(self, encrypted: EncryptedRow, associated_data: bytes) -> dict[str, str | None]:
        """Decrypt with whichever known key the row names."""
        cipher = self._by_id.get(encrypted.key_id)
        if cipher is None:
            raise QuarantineDecryptError(
                f"row was encrypted with key {encrypted.key_id}, which is neither the current "
                "quarantine key nor one of quarantine_previous_keys"
            )
        return cipher.decrypt(encrypted, associated_data)
