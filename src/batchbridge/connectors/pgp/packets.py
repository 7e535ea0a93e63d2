"""Linear OpenPGP packet framing (RFC 4880 §4.2, §6.2): split, dearmor and sanity-check messages.

Only the framing is handled here, never cryptography: the engines use it to look at a
message's structure (is it integrity protected? truncated?) before trusting any of it,
and the pgpy engine uses it to avoid pgpy's quadratic handling of partial-length bodies.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

TAG_PKESK = 1
TAG_SIGNATURE = 2
TAG_SKESK = 3
TAG_ONE_PASS_SIGNATURE = 4
TAG_COMPRESSED = 8
TAG_SED = 9  # Symmetrically Encrypted Data: no integrity protection (no MDC)
TAG_MARKER = 10
TAG_LITERAL = 11
TAG_SEIPD = 18  # Symmetrically Encrypted Integrity Protected Data: carries an MDC
TAG_MDC = 19
TAG_AEAD = 20

ARMOR_BEGIN = b"-----BEGIN PGP MESSAGE-----"
ARMOR_END = b"-----END PGP MESSAGE-----"


class PacketFormatError(ValueError):
    """Raised when bytes are not well-framed OpenPGP; `truncated` tells a cut-off input apart."""

    def __init__(self, message: str, *, truncated: bool) -> None:
        super().__init__(message)
        self.truncated = truncated


@dataclass(frozen=True, slots=True)
class RawPacket:
    """One packet: its tag, its body, and its exact wire bytes when it had a definite length."""

    tag: int
    body: memoryview
    wire: memoryview | None


def is_armored(head: bytes) -> bool:
    """True when the input starts (after blank space) like an ASCII-armored message."""
    return head.lstrip()[: len(ARMOR_BEGIN)] == ARMOR_BEGIN


def dearmor(data: bytes) -> bytes:
    """Decode an ASCII-armored message; a missing END line means the file was truncated.

    The armor CRC24 is not checked: the MDC inside the message covers integrity, and a
    pure-Python CRC over hundreds of megabytes would cost seconds.
    """
    start = data.find(ARMOR_BEGIN)
    if start < 0:
        raise PacketFormatError("no ASCII armor header", truncated=False)
    end = data.find(ARMOR_END, start)
    if end < 0:
        raise PacketFormatError("ASCII armor has no END line", truncated=True)
    lines = data[start + len(ARMOR_BEGIN) : end].splitlines()
    # Armor headers ("Version: …", "Comment: …") run until the first blank line.
    body_start = 0
    for index, line in enumerate(lines[1:], start=1):
        if not line.strip():
            body_start = index + 1
            break
        if b":" not in line:
            body_start = index
            break
    body_lines = [line.strip() for line in lines[body_start:] if line.strip()]
    # A base64 line never starts with '=', so such a line is the optional CRC24 checksum.
    if body_lines and body_lines[-1].startswith(b"=") and len(body_lines[-1]) == 5:
        body_lines.pop()
    try:
        return base64.b64decode(b"".join(body_lines), validate=True)
    except (binascii.Error, ValueError):
        raise PacketFormatError("ASCII armor body is not valid base64", truncated=False) from None


def _read_length(data: memoryview, pos: int, first: int) -> tuple[int, int, bool]:
    """Decode a new-format length (first octet already read); return (length, pos, partial)."""
    if first < 192:
        return first, pos, False
    if first < 224:
        if pos >= len(data):
            raise PacketFormatError("packet length cut off", truncated=True)
        return ((first - 192) << 8) + data[pos] + 192, pos + 1, False
    if first == 255:
        if pos + 4 > len(data):
            raise PacketFormatError("packet length cut off", truncated=True)
        return int.from_bytes(data[pos : pos + 4], "big"), pos + 4, False
    return 1 << (first & 0x1F), pos, True


def split_packets(data: bytes | memoryview) -> list[RawPacket]:
    """Split a packet sequence; bodies with partial lengths are joined in linear time."""
    view = memoryview(data)
    packets: list[RawPacket] = []
    pos = 0
    while pos < len(view):
        start = pos
        ctb = view[pos]
        pos += 1
        if not ctb & 0x80:
            raise PacketFormatError(f"byte {start} is not a packet header", truncated=False)
        if ctb & 0x40:  # new format
            tag = ctb & 0x3F
            if pos >= len(view):
                raise PacketFormatError("packet header cut off", truncated=True)
            first = view[pos]
            length, pos, partial = _read_length(view, pos + 1, first)
            if not partial:
                if pos + length > len(view):
                    raise PacketFormatError(f"packet (tag {tag}) cut off", truncated=True)
                packets.append(RawPacket(tag, view[pos : pos + length], view[start : pos + length]))
                pos += length
                continue
            chunks: list[memoryview] = []
            while partial:
                if pos + length > len(view):
                    raise PacketFormatError(f"packet (tag {tag}) cut off", truncated=True)
                chunks.append(view[pos : pos + length])
                pos += length
                if pos >= len(view):
                    raise PacketFormatError(f"packet (tag {tag}) cut off", truncated=True)
                first = view[pos]
                length, pos, partial = _read_length(view, pos + 1, first)
            if pos + length > len(view):
                raise PacketFormatError(f"packet (tag {tag}) cut off", truncated=True)
            chunks.append(view[pos : pos + length])
            pos += length
            packets.append(RawPacket(tag, memoryview(b"".join(chunks)), None))
            continue
        tag = (ctb >> 2) & 0x0F
        length_type = ctb & 0x03
        if length_type == 3:  # indeterminate: the packet runs to the end of the data
            packets.append(RawPacket(tag, view[pos:], None))
            break
        size = 1 << length_type
        if pos + size > len(view):
            raise PacketFormatError("packet header cut off", truncated=True)
        length = int.from_bytes(view[pos : pos + size], "big")
        pos += size
        if pos + length > len(view):
            raise PacketFormatError(f"packet (tag {tag}) cut off", truncated=True)
        packets.append(RawPacket(tag, view[pos : pos + length], view[start : pos + length]))
        pos += length
    return packets


# Packets an encrypted message can start with: a session key (public-key or passphrase)
# or the obsolete Marker. Anything else is not the start of a message meant for us.
_MESSAGE_START_TAGS = frozenset({TAG_PKESK, TAG_SKESK, TAG_MARKER})


def first_packet_tag(data: bytes) -> int | None:
    """Tag of the packet whose header starts `data`, or None if it is no packet header."""
    if not data or not data[0] & 0x80:
        return None
    return data[0] & 0x3F if data[0] & 0x40 else (data[0] >> 2) & 0x0F


def looks_like_encrypted_message(data: bytes) -> bool:
    """True when `data` begins like a (binary) encrypted OpenPGP message."""
    return first_packet_tag(data) in _MESSAGE_START_TAGS


def file_looks_truncated(path: Path) -> bool:
    """True when the message file ends before its packets (or its armor) do.

    Reads only packet headers (seeking over bodies) or the armor's last bytes, so it is
    cheap even for very large files; used to turn a generic failure into 'truncated'.
    """
    with path.open("rb") as handle:
        head = handle.read(64)
        if is_armored(head):
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 4096))
            return ARMOR_END not in handle.read()
        if not looks_like_encrypted_message(head):
            # A CSV (a UTF-8 BOM starts with a byte >= 0x80) is not a cut-off message.
            return False
        handle.seek(0)
        try:
            tags = _walk_headers(handle)
        except PacketFormatError as exc:
            return exc.truncated
    # Whole session key packets and nothing after them: the file was cut off exactly
    # where the encrypted data should start.
    return not _DATA_TAGS.intersection(tags)


# Packets that carry a message's encrypted data; one must follow the session keys.
_DATA_TAGS = frozenset({TAG_SED, TAG_SEIPD, TAG_AEAD})


def _walk_headers(handle: BinaryIO) -> list[int]:
    """The tags of the packets in `handle`, reading headers only; raises when cut off."""
    tags: list[int] = []
    size = handle.seek(0, os.SEEK_END)
    pos = 0
    while pos < size:
        handle.seek(pos)
        header = handle.read(6)
        view = memoryview(header)
        ctb = header[0]
        if not ctb & 0x80:
            raise PacketFormatError("not a packet header", truncated=False)
        tags.append(ctb & 0x3F if ctb & 0x40 else (ctb >> 2) & 0x0F)
        if ctb & 0x40:
            if len(header) < 2:
                raise PacketFormatError("packet header cut off", truncated=True)
            length, used, partial = _read_length(view, 2, header[1])
            pos += used
            while partial:
                pos += length
                if pos >= size:
                    raise PacketFormatError("packet cut off", truncated=True)
                handle.seek(pos)
                chunk_header = handle.read(5)
                length, used, partial = _read_length(memoryview(chunk_header), 1, chunk_header[0])
                pos += used
            pos += length
        else:
            length_type = ctb & 0x03
            if length_type == 3:
                return tags
            octets = 1 << length_type
            if len(header) < 1 + octets:
                raise PacketFormatError("packet header cut off", truncated=True)
            pos += 1 + octets + int.from_bytes(header[1 : 1 + octets], "big")
        if pos > size:
            raise PacketFormatError("packet cut off", truncated=True)
    return tags
