"""Pure-Python decryptor on pgpy, with the guards pgpy lacks (MDC, revocation, bounded inflate).

pgpy 0.6 is used for what it does well: reading keys, unwrapping the session key and
checking signature math. It is deliberately *not* used for message framing or
decompression, because it (1) is quadratic on partial-length packets (58 s for a 125 MB
gpg file), (2) decrypts messages without an MDC, (3) verifies signatures of revoked
keys, and (4) inflates compressed data without any limit. Instead this engine (the
message layers in layers.py):

* refuses ciphertext above a cap (default 256 MiB) before reading it;
* splits packets itself in linear time and requires a SEIPD packet (tag 18, MDC)
  rather than SED (tag 9), checking the MDC before looking at a decrypted byte;
* inflates with zlib/bz2 decompressors bounded by `max_length`, so a bomb stops at the
  plaintext / ratio cap instead of filling memory, and refuses nested compression;
* checks revocation and expiry of the signing key (and its primary) itself.
"""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pgpy
from cryptography.hazmat.primitives import hashes
from pgpy.constants import SignatureType, SymmetricKeyAlgorithm

from batchbridge.connectors.pgp.base import (
    DecryptorKeys,
    DecryptorLimits,
    PlaintextStream,
    VerifiedPlaintext,
    whole_message_stream,
)
from batchbridge.connectors.pgp.keys import (
    PGPKey,
    iter_key_and_subkeys,
    key_expires_at,
    key_is_revoked,
    load_private_key,
    load_public_keys,
)
from batchbridge.connectors.pgp.layers import (
    decrypt_seipd,
    inflate,
    inflate_budget,
    literal_data,
    signed_message_parts,
)
from batchbridge.connectors.pgp.packets import (
    TAG_AEAD,
    TAG_COMPRESSED,
    TAG_MARKER,
    TAG_PKESK,
    TAG_SED,
    TAG_SEIPD,
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

_DOCUMENT_SIGNATURES = frozenset({SignatureType.BinaryDocument, SignatureType.CanonicalDocument})


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

    def open_stream(self, path: Path) -> AbstractContextManager[PlaintextStream]:
        """pgpy reads a message whole: the stream is one block."""
        return whole_message_stream(self, path)

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
        inner = decrypt_seipd(path, encrypted.body, algorithm, session_key)
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
            budget = inflate_budget(self._limits, ciphertext_size)
            stream = inflate(path, packets[0].body, budget)
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
        literal_packet, signatures = signed_message_parts(path, packets)
        literal = literal_data(path, literal_packet.body)
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
