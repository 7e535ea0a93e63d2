"""A decrypted message for tests: plaintext bytes served block by block, as a decryptor streams."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from batchbridge.errors import SignatureError
from batchbridge.validations.stream import PlaintextSource


class BytesPlaintext:
    """`data` in blocks of `block` bytes; `opened` counts the reads of the message, `sent`
    the blocks handed out over all of them."""

    def __init__(self, data: bytes, *, block: int = 4096, bad_signature: bool = False) -> None:
        self.data, self.block, self.bad_signature = data, block, bad_signature
        self.opened = 0
        self.sent = 0

    def blocks(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.block):
            self.sent += 1
            yield self.data[start : start + self.block]

    def verified(self) -> tuple[str, datetime | None]:
        if self.bad_signature:
            raise SignatureError("signed by a key that is not pinned", reason="signer_not_pinned")
        return "ABCD" * 10, None

    @contextmanager
    def open(self) -> Iterator[PlaintextSource]:
        self.opened += 1
        yield self
