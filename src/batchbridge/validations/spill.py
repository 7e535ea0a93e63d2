"""Transformed rows kept on disk between the stream and the load, encrypted with a key never stored.

A streamed file's transformed rows must wait until the whole file was read (signature,
trailer, repeated keys) before any target sees them, and a load retried after a dropped
connection reads them again. Holding them in memory would make memory grow with the
file, so each chunk is written to a spill file in the feed's staging folder as Arrow IPC,
sealed with AES-256-GCM under a key made for this file and held only in this process
(the chunk's number is the associated data, so chunks cannot be swapped or replayed).
Chunks are LZ4-compressed first: this machine's disk throttles a process writing a few
hundred MB at once, and LZ4 costs less CPU than the bytes it saves cost in waiting.
The rows are pseudonymised already, yet still patient data: after a crash the spill is
unreadable, and `close` removes it.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path

import polars as pl
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_HEADER = struct.Struct(">Q")  # length of one sealed chunk
_NONCE_BYTES = 12


class EncryptedSpill:
    """Frames appended to an encrypted file, read back in order as often as needed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cipher = AESGCM(AESGCM.generate_key(bit_length=256))
        # A spill left by a killed run is unreadable (its key died with it): replace it.
        # O_EXCL then never follows a link someone put there meanwhile.
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._out: io.BufferedWriter | None = os.fdopen(fd, "wb")
        self._count = 0

    def append(self, frame: pl.DataFrame) -> None:
        """Seal `frame` and add it at the end."""
        assert self._out is not None, "spill already closed"
        buffer = io.BytesIO()
        frame.write_ipc(buffer, compression="lz4")
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._cipher.encrypt(nonce, buffer.getbuffer(), _chunk_label(self._count))
        del buffer
        self._out.write(_HEADER.pack(len(sealed)) + nonce)
        self._out.write(sealed)
        self._count += 1

    def frames(self) -> Iterator[pl.DataFrame]:
        """Every frame appended so far, in order (one in memory at a time)."""
        if self._out is not None:
            self._out.flush()
        with self.path.open("rb") as spill:
            for number in range(self._count):
                (length,) = _HEADER.unpack(spill.read(_HEADER.size))
                nonce = spill.read(_NONCE_BYTES)
                sealed = spill.read(length)
                plain = self._cipher.decrypt(nonce, sealed, _chunk_label(number))
                del sealed
                yield pl.read_ipc(io.BytesIO(plain))

    def close(self) -> None:
        """Remove the spill file (its key goes with this object)."""
        if self._out is not None:
            self._out.close()
            self._out = None
        self.path.unlink(missing_ok=True)


def _chunk_label(number: int) -> bytes:
    return b"batchbridge-spill-chunk:" + str(number).encode()
