"""Pure-Python decryptor on pgpy, with the guards pgpy lacks (MDC, revocation, bounded inflate).

pgpy 0.6 is used for what it does well: reading keys, unwrapping the session key and
checking signature math. It is deliberately *not* used for message framing or
decompression, because it (1) is quadratic on partial-length packets (58 s for a 125 MB
gpg file), (2) decrypts messages without an MDC, (3) verifies signatures of revoked
keys, and (4) inflates compressed data without any limit. Instead this module:

* refuses ciphertext above a cap (default 256 MiB) before reading it;
* splits packets itself in linear time and requires a SEIPD packet (tag 18, MDC)
  rather than SED (tag 9), checking the MDC before looking at a decrypted byte;
* inflates with zlib/bz2 decompressors bounded by `max_length`, so a bomb stops at the
  plaintext / ratio cap instead of filling memory, and refuses nested compression;
* checks revocation and expiry of the signing key (and its primary) itself.
"""

from __future__ import annotations

import bz2
import hashlib
import hmac
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pgpy
from cryptography.hazmat.decrepit.ciphers import algorithms as decrepit_algorithms
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:
    # cryptography 48+ keeps CFB (which OpenPGP needs) among its "decrepit" modes; the old
    # location warns and is going away.
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB
from pgpy.constants import SignatureType, SymmetricKeyAlgorithm

from batchbridge.connectors.pgp.base import (
    DecryptorKeys,
    DecryptorLimits,
    VerifiedPlaintext,
)
from batchbridge.connectors.pgp.keys import (
    PGPKey,
    iter_key_and_subkeys,
    key_expires_at,
    key_is_revoked,
    load_private_key,
    load_public_keys,
)
from batchbridge.connectors.pgp.packets import (
    TAG_AEAD,
    TAG_COMPRESSED,
    TAG_LITERAL,
    TAG_MARKER,
    TAG_ONE_PASS_SIGNATURE,
    TAG_PKESK,
    TAG_SED,
    TAG_SEIPD,
    TAG_SIGNATURE,
    TAG_SKESK,
    PacketFormatError,
    RawPacket,
    dearmor,
    is_armored,
    looks_like_encrypted_message,
    split_packets,
)
from batchbridge.errors import (
    ConfigError,
    DecryptError,
    IntegrityError,
    PlaintextLimitError,
    SignatureError,
)

DEFAULT_MAX_CIPHERTEXT_BYTES = 256 * 1024**2

# Room for the packets that travel with the literal data inside the compressed stream
# (one-pass signature, literal header with a file name, signatures): the plaintext cap
# itself is applied exactly to the literal data afterwards.
_FRAMING_ALLOWANCE = 64 * 1024
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
_DOCUMENT_SIGNATURES = frozenset({SignatureType.BinaryDocument, SignatureType.CanonicalDocument})


@dataclass(frozen=True, slots=True)
class _Budget:
    """How many decompressed bytes we accept, and which cap the number came from."""

    limit: int
    reason: str
    message: str


class PGPyDecryptor:
    """Decrypt and verify with pgpy; meant for small and medium files (see module docstring)."""

    def __init__(
        self,
        keys: DecryptorKeys,
        limits: DecryptorLimits,
        max_ciphertext_bytes: int = DEFAULT_MAX_CIPHERTEXT_BYTES,
    ) -> None:
        if max_ciphertext_bytes <= 0:
            raise ConfigError("max_ciphertext_bytes must be positive")
        self._limits = limits
        self._max_ciphertext_bytes = max_ciphertext_bytes
        self._private = load_private_key(keys.private_key.get_secret_value())
        self._passphrase = keys.passphrase
        self._partners = load_public_keys(keys.partner_public_keys)
        # pgpy unlocks a key by mutating it in place and wipes it on exit: concurrent
        # decryptions (Prefect runs tasks in threads) must not interleave there.
        self._unlock_lock = threading.Lock()

    def decrypt_and_verify(self, path: Path) -> VerifiedPlaintext:
        """Decrypt `path`; require an MDC and a valid signature by a pinned partner key."""
        with path.open("rb") as handle:
            # Never read more than the cap, even if the file grew after it was listed (the
            # read size is bounded by the size seen now, so no cap-sized buffer is allocated).
            seen = os.fstat(handle.fileno()).st_size
            data = handle.read(min(seen, self._max_ciphertext_bytes) + 1)
        size = len(data)
        if size > self._max_ciphertext_bytes:
            raise PlaintextLimitError(
                f"{path.name}: ciphertext is over the pgpy engine's cap of "
                f"{self._max_ciphertext_bytes} bytes ({self._max_ciphertext_bytes / 1024**2:.0f} "
                "MiB); pgpy is slow and memory-hungry on big files: use the gnupg engine",
                reason="ciphertext_too_large",
            )
        try:
            if is_armored(data[:1024]):
                data = dearmor(data)
            if not looks_like_encrypted_message(data[:1]):
                raise PacketFormatError("not an encrypted message", truncated=False)
            outer = split_packets(data)
        except PacketFormatError as exc:
            if exc.truncated:
                raise IntegrityError(
                    f"{path.name}: message is truncated", reason="truncated"
                ) from None
            raise DecryptError(
                f"{path.name}: not an OpenPGP message", reason="not_openpgp"
            ) from None
        encrypted = self._encrypted_packet(path, outer)
        algorithm, session_key = self._session_key(path, outer)
        inner = _decrypt_seipd(path, encrypted.body, algorithm, session_key)
        del data, outer, encrypted
        literal, signatures = self._unwrap(path, inner, size)
        signer, signed_at = self._verify(path, literal, signatures)
        return VerifiedPlaintext(data=literal, signer_fingerprint=signer, signed_at=signed_at)

    # -- structure --------------------------------------------------------------------

    def _encrypted_packet(self, path: Path, outer: list[RawPacket]) -> RawPacket:
        tags = [packet.tag for packet in outer if packet.tag != TAG_MARKER]
        if TAG_SED in tags:
            raise IntegrityError(
                f"{path.name}: message is not integrity protected (no MDC); ask the partner "
                "to use a current OpenPGP tool",
                reason="no_mdc",
            )
        if TAG_AEAD in tags:
            raise DecryptError(
                f"{path.name}: AEAD-encrypted messages are not supported by the pgpy engine",
                reason="unsupported_algorithm",
            )
        if TAG_SEIPD not in tags:
            if tags and set(tags) <= {TAG_PKESK, TAG_SKESK}:
                # Session keys and then nothing: cut off where the data should start.
                raise IntegrityError(f"{path.name}: message is truncated", reason="truncated")
            raise DecryptError(f"{path.name}: message is not encrypted", reason="not_encrypted")
        if tags.count(TAG_SEIPD) != 1 or any(
            tag not in {TAG_PKESK, TAG_SKESK, TAG_SEIPD} for tag in tags
        ):
            raise DecryptError(
                f"{path.name}: unexpected packet layout {tags}", reason="unexpected_structure"
            )
        return next(packet for packet in outer if packet.tag == TAG_SEIPD)

    def _session_key(
        self, path: Path, outer: list[RawPacket]
    ) -> tuple[SymmetricKeyAlgorithm, bytes]:
        ours = {str(part.fingerprint.keyid): part for part in iter_key_and_subkeys(self._private)}
        recipients: list[str] = []
        addressed_to_us = False
        for packet in outer:
            if packet.tag != TAG_PKESK:
                continue
            parsed = _parse_pkesk(packet)
            if parsed is None:
                continue
            pkesk, keyid = parsed
            recipients.append(keyid)
            # An all-zero key id is an anonymous recipient ("throw-keyids"): try our keys.
            candidates = list(ours.values()) if keyid == "0" * 16 else [ours.get(keyid)]
            for candidate in candidates:
                if candidate is None:
                    continue
                addressed_to_us = addressed_to_us or keyid != "0" * 16
                result = self._unwrap_session_key(pkesk, candidate)
                if result is not None:
                    return result
        if addressed_to_us:
            raise IntegrityError(
                f"{path.name}: the session key encrypted to our key cannot be recovered "
                "(the file is corrupt)",
                reason="corrupt",
            )
        shown = ", ".join(recipients) or "none"
        raise DecryptError(
            f"{path.name}: message is encrypted to key id(s) {shown}, none of which is our "
            "private key",
            reason="wrong_recipient",
        )

    def _unwrap_session_key(
        self, pkesk: Any, part: PGPKey
    ) -> tuple[SymmetricKeyAlgorithm, bytes] | None:
        with self._unlock_lock:
            if not self._private.is_protected:
                return _try_decrypt_sk(pkesk, part)
            if self._passphrase is None:
                raise ConfigError(
                    "our private key is passphrase-protected but no passphrase is configured",
                    reason="passphrase_missing",
                )
            try:
                # _try_decrypt_sk swallows its own errors, so anything raised here is unlock's.
                with self._private.unlock(self._passphrase.get_secret_value()):
                    return _try_decrypt_sk(pkesk, part)
            except Exception:
                raise ConfigError(
                    "our private key's passphrase was rejected", reason="passphrase_rejected"
                ) from None

    def _unwrap(
        self, path: Path, inner: memoryview, ciphertext_size: int
    ) -> tuple[bytes, list[RawPacket]]:
        """Literal data and signature packets from the decrypted (integrity-checked) stream."""
        try:
            packets = split_packets(inner)
        except PacketFormatError:
            raise DecryptError(
                f"{path.name}: decrypted data is not a valid OpenPGP packet stream",
                reason="unexpected_structure",
            ) from None
        if packets and packets[0].tag == TAG_COMPRESSED:
            if len(packets) != 1:
                raise DecryptError(
                    f"{path.name}: data follows the compressed packet",
                    reason="unexpected_structure",
                )
            budget = self._budget(ciphertext_size)
            stream = _inflate(path, packets[0].body, budget)
            try:
                packets = split_packets(stream)
            except PacketFormatError:
                raise DecryptError(
                    f"{path.name}: decompressed data is not a valid OpenPGP packet stream",
                    reason="unexpected_structure",
                ) from None
            if any(packet.tag == TAG_COMPRESSED for packet in packets):
                raise DecryptError(
                    f"{path.name}: nested compression is refused (decompression-bomb guard)",
                    reason="nested_compression",
                )
        literal_packet, signatures = _signed_message_parts(path, packets)
        literal = _literal_data(path, literal_packet.body)
        if len(literal) > self._limits.max_plaintext_bytes:
            raise PlaintextLimitError(
                f"{path.name}: plaintext is {len(literal)} bytes, over the cap of "
                f"{self._limits.max_plaintext_bytes} bytes",
                reason="plaintext_too_large",
            )
        if len(literal) > self._limits.max_compression_ratio * ciphertext_size:
            raise PlaintextLimitError(
                f"{path.name}: plaintext is more than {self._limits.max_compression_ratio:g} "
                "times the ciphertext size",
                reason="compression_ratio",
            )
        return bytes(literal), signatures

    def _budget(self, ciphertext_size: int) -> _Budget:
        by_size = self._limits.max_plaintext_bytes + _FRAMING_ALLOWANCE
        by_ratio = int(self._limits.max_compression_ratio * ciphertext_size) + _FRAMING_ALLOWANCE
        if by_ratio < by_size:
            return _Budget(
                by_ratio,
                "compression_ratio",
                f"decompresses to more than {self._limits.max_compression_ratio:g} times the "
                "ciphertext size (decompression-bomb guard)",
            )
        return _Budget(
            by_size,
            "plaintext_too_large",
            f"plaintext is over the cap of {self._limits.max_plaintext_bytes} bytes",
        )

    # -- signatures -------------------------------------------------------------------

    def _verify(
        self, path: Path, literal: bytes, signatures: list[RawPacket]
    ) -> tuple[str, datetime | None]:
        if not signatures:
            raise SignatureError(f"{path.name}: message is not signed", reason="unsigned")
        now = datetime.now(UTC)
        first: tuple[str, datetime | None] | None = None
        for packet in signatures:
            try:
                signature = pgpy.PGPSignature() | pgpy.packet.Packet(bytearray(_wire(packet)))
                keyid = str(signature.signer)
            except Exception:
                raise SignatureError(
                    f"{path.name}: a signature packet cannot be read", reason="bad_signature"
                ) from None
            primary, signing = self._pinned_signer(keyid)
            if primary is None or signing is None:
                raise SignatureError(
                    f"{path.name}: signed by key id {keyid}, which is not a pinned partner key",
                    reason="wrong_signer",
                )
            fingerprint = str(primary.fingerprint)
            if key_is_revoked(signing):
                raise SignatureError(
                    f"{path.name}: signed by key {fingerprint}, which has been revoked",
                    reason="signer_revoked",
                )
            expires_at = key_expires_at(signing)
            if expires_at is not None and expires_at <= now:
                raise SignatureError(
                    f"{path.name}: signed by key {fingerprint}, which expired at "
                    f"{expires_at.isoformat()}",
                    reason="signer_expired",
                )
            if signature.expires_at is not None and signature.expires_at <= now:
                raise SignatureError(
                    f"{path.name}: the signature by key {fingerprint} has expired",
                    reason="signature_expired",
                )
            if signature.type not in _DOCUMENT_SIGNATURES or not _signature_math_ok(
                signing, signature, literal
            ):
                raise SignatureError(
                    f"{path.name}: bad signature by key {fingerprint}", reason="bad_signature"
                )
            if first is None:
                first = (fingerprint, signature.created)
        if first is None:  # unreachable: the loop raises or sets it
            raise SignatureError(f"{path.name}: message is not signed", reason="unsigned")
        return first

    def _pinned_signer(self, keyid: str) -> tuple[PGPKey | None, PGPKey | None]:
        """(primary, the key or subkey that has `keyid`) among the pinned partner keys."""
        for primary in self._partners:
            for part in iter_key_and_subkeys(primary):
                if str(part.fingerprint.keyid) == keyid:
                    return primary, part
        return None, None


def _wire(packet: RawPacket) -> bytes:
    """The packet as pgpy expects to read it (header + body)."""
    if packet.wire is not None:
        return bytes(packet.wire)
    body = bytes(packet.body)
    return bytes([0xC0 | packet.tag, 0xFF]) + len(body).to_bytes(4, "big") + body


def _parse_pkesk(packet: RawPacket) -> tuple[Any, str] | None:
    """pgpy's view of a session key packet and its recipient key id; None if unreadable."""
    try:
        pkesk = pgpy.packet.Packet(bytearray(_wire(packet)))
        return pkesk, str(pkesk.encrypter)
    except Exception:  # an unparseable session key packet is simply not one for us
        return None


def _try_decrypt_sk(pkesk: Any, part: PGPKey) -> tuple[SymmetricKeyAlgorithm, bytes] | None:
    try:
        algorithm, key = pkesk.decrypt_sk(part._key)
    except Exception:  # wrong key, unsupported algorithm or corrupt packet: not decryptable
        return None
    return SymmetricKeyAlgorithm(algorithm), bytes(key)


def _decrypt_seipd(
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


def _inflate(path: Path, body: memoryview, budget: _Budget) -> bytes:
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


def _signed_message_parts(
    path: Path, packets: list[RawPacket]
) -> tuple[RawPacket, list[RawPacket]]:
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


def _literal_data(path: Path, body: memoryview) -> memoryview:
    """The data of a Literal Data packet: format octet, name, 4-octet date, then the data."""
    if len(body) < 6:
        raise DecryptError(f"{path.name}: literal data packet is malformed", reason="corrupt")
    name_length = body[1]
    start = 2 + name_length + 4
    if start > len(body):
        raise DecryptError(f"{path.name}: literal data packet is malformed", reason="corrupt")
    return body[start:]


def _signature_math_ok(signing: PGPKey, signature: Any, literal: bytes) -> bool:
    """Check the signature math with the exact key or subkey that made it.

    This calls pgpy's key-material verify directly: `PGPKey.verify` would re-run pgpy's
    own management checks, which do not catch revocation and emit warnings on every call.
    """
    try:
        digest = getattr(hashes, signature.hash_algorithm.name)()
        result = signing._key.verify(signature.hashdata(literal), signature.__sig__, digest)
    except Exception:
        return False
    return result is True
