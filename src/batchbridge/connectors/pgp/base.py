"""The Decryptor protocol: decrypt an OpenPGP file and prove who signed it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
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


class PlaintextStream(Protocol):
    """One message's plaintext block by block, then who signed it.

    Nothing made of the blocks may become visible anywhere before `verified()`
    returned: a signature can only be judged at the end of the message.
    """

    def blocks(self) -> Iterator[bytes]:
        """The plaintext in blocks as it is decrypted (size caps enforced as it streams)."""
        ...

    def verified(self) -> tuple[str, datetime | None]:
        """(signer fingerprint, signed at); reads what is left first; raises DecryptError."""
        ...


class Decryptor(Protocol):
    """Decrypts one message; raises SignatureError/IntegrityError/PlaintextLimitError."""

    def decrypt_and_verify(self, path: Path) -> VerifiedPlaintext:
        """Decrypt `path`, require a valid signature by a pinned partner key and an MDC."""
        ...

    def open_stream(self, path: Path) -> AbstractContextManager[PlaintextStream]:
        """`path`'s plaintext as a stream (see PlaintextStream)."""
        ...


class WholeMessageStream:
    """A decryptor that reads a message whole (pgpy) seen as a stream of one block."""

    def __init__(self, decryptor: Decryptor, path: Path) -> None:
        self._decryptor = decryptor
        self._path = path
        self._signer: tuple[str, datetime | None] | None = None

    def blocks(self) -> Iterator[bytes]:
        plaintext = self._decryptor.decrypt_and_verify(self._path)
        self._signer = (plaintext.signer_fingerprint, plaintext.signed_at)
        yield plaintext.data

    def verified(self) -> tuple[str, datetime | None]:
        if self._signer is None:
            for _block in self.blocks():
                pass
        assert self._signer is not None
        return self._signer


@contextmanager
def whole_message_stream(decryptor: Decryptor, path: Path) -> Iterator[PlaintextStream]:
    """`open_stream` for decryptors that cannot stream."""
    yield WholeMessageStream(decryptor, path)
