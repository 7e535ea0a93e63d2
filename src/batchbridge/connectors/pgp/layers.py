"""OpenPGP message layers opened without pgpy: SEIPD with its MDC, bounded inflate, framing.

pgpy is quadratic on partial-length packets, decrypts messages without an MDC and
inflates without limit; the pgpy engine therefore opens these layers itself, here, and
leaves pgpy the keys, the session key and the signature math.
"""

from __future__ import annotations

import bz2
import hashlib
import hmac
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.decrepit.ciphers import algorithms as decrepit_algorithms
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:
    # cryptography 48+ keeps CFB (which OpenPGP needs) among its "decrepit" modes; the old
    # location warns and is going away.
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB
from pgpy.constants import SymmetricKeyAlgorithm

from batchbridge.connectors.pgp.base import DecryptorLimits
from batchbridge.connectors.pgp.packets import (
    TAG_LITERAL,
    TAG_MARKER,
    TAG_ONE_PASS_SIGNATURE,
    TAG_SIGNATURE,
    RawPacket,
)
from batchbridge.errors import DecryptError, IntegrityError, PlaintextLimitError

# Room for the packets that travel with the literal data inside the compressed stream
# (one-pass signature, literal header with a file name, signatures): the plaintext cap
# itself is applied exactly to the literal data afterwards.
FRAMING_ALLOWANCE = 64 * 1024
_INFLATE_CHUNK = 1024 * 1024
# Output per decompress call. Asking for the whole remaining budget at once let one call
# build a cap-sized buffer and copy it, so a bomb peaked at twice the plaintext cap.
_INFLATE_OUT = 16 * 1024 * 1024
_MDC_TRAILER = b"\xd3\x14"

_CIPHERS: dict[SymmetricKeyAlgorithm, Callable[[bytes], Any]] = {
    SymmetricKeyAlgorithm.AES128: algorithms.AES,
    SymmetricKeyAlgorithm.AES192: algorithms.AES,
    SymmetricKeyAlgorithm.AES256: algorithms.AES,
    # Older partner tools may still pick these; cryptography keeps them in "decrepit".
    SymmetricKeyAlgorithm.CAST5: decrepit_algorithms.CAST5,
    SymmetricKeyAlgorithm.TripleDES: decrepit_algorithms.TripleDES,
    SymmetricKeyAlgorithm.Blowfish: decrepit_algorithms.Blowfish,
    SymmetricKeyAlgorithm.Camellia128: decrepit_algorithms.Camellia,
    SymmetricKeyAlgorithm.Camellia192: decrepit_algorithms.Camellia,
    SymmetricKeyAlgorithm.Camellia256: decrepit_algorithms.Camellia,
}


@dataclass(frozen=True, slots=True)
class InflateBudget:
    """How many decompressed bytes we accept, and which cap the number came from."""

    limit: int
    reason: str
    message: str


def inflate_budget(limits: DecryptorLimits, ciphertext_size: int) -> InflateBudget:
    """How far a compressed packet may inflate: the lower of the plaintext and ratio caps."""
    by_size = limits.max_plaintext_bytes + FRAMING_ALLOWANCE
    by_ratio = int(limits.max_compression_ratio * ciphertext_size) + FRAMING_ALLOWANCE
    if by_ratio < by_size:
        return InflateBudget(
            by_ratio,
            "compression_ratio",
            f"decompresses to more than {limits.max_compression_ratio:g} times the "
            "ciphertext size (decompression-bomb guard)",
        )
    return InflateBudget(
        by_size,
        "plaintext_too_large",
        f"plaintext is over the cap of {limits.max_plaintext_bytes} bytes",
    )


def decrypt_seipd(
    path: Path, body: memoryview, algorithm: SymmetricKeyAlgorithm, key: bytes
) -> memoryview:
    """Decrypt a SEIPD body and check its MDC; return the packets between prefix and MDC."""
    factory = _CIPHERS.get(algorithm)
    if factory is None:
        raise DecryptError(
            f"{path.name}: cipher {algorithm.name} is not supported", reason="unsupported_algorithm"
        )
    cipher_algorithm = factory(key)
    # Block size from cryptography, not pgpy: pgpy's property touches deprecated ciphers
    # and warns on every call.
    block = cipher_algorithm.block_size // 8
    if len(body) < 1 + block + 2 + len(_MDC_TRAILER) + 20 or body[0] != 1:
        raise IntegrityError(f"{path.name}: encrypted packet is malformed", reason="corrupt")
    decryptor = Cipher(cipher_algorithm, CFB(b"\x00" * block)).decryptor()
    # CFB is a stream mode: finalize() yields nothing, so skip the concatenation's copy.
    plain = memoryview(decryptor.update(body[1:]))
    decryptor.finalize()
    digest = hashlib.sha1(plain[:-20]).digest()  # noqa: S324 - SHA-1 is what RFC 4880's MDC is
    mdc_ok = plain[-22:-20] == _MDC_TRAILER and hmac.compare_digest(digest, plain[-20:])
    quick_check_ok = plain[block - 2 : block] == plain[block : block + 2]
    if not (mdc_ok and quick_check_ok):
        raise IntegrityError(
            f"{path.name}: integrity check (MDC) failed: the file was modified or truncated",
            reason="bad_mdc",
        )
    return plain[block + 2 : -22]


def inflate(path: Path, body: memoryview, budget: InflateBudget) -> bytes:
    """Decompress a Compressed Data packet body, never producing more than `budget.limit`."""
    if not body:
        raise DecryptError(f"{path.name}: empty compressed packet", reason="corrupt_compression")
    algorithm, data = body[0], body[1:]
    if algorithm == 0:
        if len(data) > budget.limit:
            raise PlaintextLimitError(f"{path.name}: {budget.message}", reason=budget.reason)
        return bytes(data)
    out: list[bytes] = []
    total = 0
    try:
        if algorithm in (1, 2):
            # 1 = ZIP (raw RFC 1951 deflate), 2 = ZLIB (RFC 1950).
            inflater = zlib.decompressobj(-15 if algorithm == 1 else 15)
            pos = 0
            while not inflater.eof:
                if inflater.unconsumed_tail:
                    chunk_in: bytes | memoryview = inflater.unconsumed_tail
                elif pos < len(data):
                    chunk_in = data[pos : pos + _INFLATE_CHUNK]
                    pos += _INFLATE_CHUNK
                else:
                    break
                piece = inflater.decompress(chunk_in, min(_INFLATE_OUT, budget.limit - total + 1))
                total += len(piece)
                if total > budget.limit:
                    raise PlaintextLimitError(
                        f"{path.name}: {budget.message}", reason=budget.reason
                    )
                out.append(piece)
            finished = inflater.eof
        elif algorithm == 3:
            bunzip = bz2.BZ2Decompressor()
            pos = 0
            while not bunzip.eof:
                if bunzip.needs_input:
                    if pos >= len(data):
                        break
                    chunk_in = data[pos : pos + _INFLATE_CHUNK]
                    pos += _INFLATE_CHUNK
                else:
                    chunk_in = b""
                piece = bunzip.decompress(chunk_in, min(_INFLATE_OUT, budget.limit - total + 1))
                total += len(piece)
                if total > budget.limit:
                    raise PlaintextLimitError(
                        f"{path.name}: {budget.message}", reason=budget.reason
                    )
                out.append(piece)
            finished = bunzip.eof
        else:
            raise DecryptError(
                f"{path.name}: unknown compression algorithm {algorithm}",
                reason="unsupported_algorithm",
            )
    except (zlib.error, OSError, EOFError):
        raise DecryptError(
            f"{path.name}: compressed data is corrupt", reason="corrupt_compression"
        ) from None
    if not finished:
        raise DecryptError(
            f"{path.name}: compressed data is incomplete", reason="corrupt_compression"
        )
    return b"".join(out)


def signed_message_parts(path: Path, packets: list[RawPacket]) -> tuple[RawPacket, list[RawPacket]]:
    """The literal packet and the signatures over it, following RFC 4880 §11.3's grammar.

    Signatures come either before the literal data, or after it with one One-Pass
    Signature header before it per trailing signature. Anything else (a second literal,
    a stray trailing signature, other packets) is refused rather than guessed at.
    """
    tags = [packet.tag for packet in packets if packet.tag != TAG_MARKER]
    kept = [packet for packet in packets if packet.tag != TAG_MARKER]
    if tags.count(TAG_LITERAL) == 1:
        at = tags.index(TAG_LITERAL)
        before, after = tags[:at], tags[at + 1 :]
        if (
            set(before) <= {TAG_ONE_PASS_SIGNATURE, TAG_SIGNATURE}
            and set(after) <= {TAG_SIGNATURE}
            and before.count(TAG_ONE_PASS_SIGNATURE) == len(after)
        ):
            signatures = [packet for packet in kept if packet.tag == TAG_SIGNATURE]
            return kept[at], signatures
    raise DecryptError(
        f"{path.name}: unexpected packet layout inside the message {tags}",
        reason="unexpected_structure",
    )


def literal_data(path: Path, body: memoryview) -> memoryview:
    """The data of a Literal Data packet: format octet, name, 4-octet date, then the data."""
    if len(body) < 6:
        raise DecryptError(f"{path.name}: literal data packet is malformed", reason="corrupt")
    name_length = body[1]
    start = 2 + name_length + 4
    if start > len(body):
        raise DecryptError(f"{path.name}: literal data packet is malformed", reason="corrupt")
    return body[start:]
