"""Unit tests for the linear OpenPGP packet framing that inspects messages before trusting them."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from batchbridge.connectors.pgp.packets import (
    PacketFormatError,
    dearmor,
    file_looks_truncated,
    is_armored,
    split_packets,
)


def new_packet(tag: int, body: bytes) -> bytes:
    """New-format packet with a five-octet length."""
    return bytes([0xC0 | tag, 0xFF]) + len(body).to_bytes(4, "big") + body


def partial_packet(tag: int, body: bytes, chunk_power: int = 4) -> bytes:
    """New-format packet whose body is sent in partial chunks of 2**chunk_power octets."""
    size = 1 << chunk_power
    out = bytearray([0xC0 | tag])
    rest = body
    while len(rest) > size:
        out += bytes([224 + chunk_power]) + rest[:size]
        rest = rest[size:]
    # The last chunk has a definite length (one or two octets).
    n = len(rest)
    out += (bytes([n]) if n < 192 else bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])) + rest
    return bytes(out)


def old_packet(tag: int, body: bytes) -> bytes:
    """Old-format packet with a two-octet length."""
    return bytes([0x80 | (tag << 2) | 1]) + len(body).to_bytes(2, "big") + body


def test_split_reads_new_old_and_partial_lengths() -> None:
    data = new_packet(1, b"session") + old_packet(2, b"sig") + partial_packet(18, b"x" * 100)
    packets = split_packets(data)
    assert [(p.tag, bytes(p.body)) for p in packets] == [
        (1, b"session"),
        (2, b"sig"),
        (18, b"x" * 100),
    ]
    assert packets[0].wire is not None and bytes(packets[0].wire) == new_packet(1, b"session")
    assert packets[2].wire is None  # partial bodies are re-assembled, not kept as on the wire


def test_two_octet_new_format_length() -> None:
    body = b"y" * 300
    n = len(body) - 192
    data = bytes([0xC0 | 11, (n >> 8) + 192, n & 0xFF]) + body
    assert bytes(split_packets(data)[0].body) == body


def test_old_format_indeterminate_length_runs_to_the_end() -> None:
    data = bytes([0x80 | (8 << 2) | 3]) + b"rest of the file"
    assert [(p.tag, bytes(p.body)) for p in split_packets(data)] == [(8, b"rest of the file")]


@pytest.mark.parametrize(
    "data",
    [
        new_packet(18, b"z" * 50)[:-1],
        partial_packet(18, b"z" * 100)[:40],
        old_packet(2, b"abc")[:3],
        bytes([0xC0 | 18]),
    ],
    ids=["definite", "partial", "old", "header-only"],
)
def test_cut_off_data_is_reported_as_truncated(data: bytes) -> None:
    with pytest.raises(PacketFormatError) as info:
        split_packets(data)
    assert info.value.truncated


def test_non_packet_bytes_are_not_truncation() -> None:
    with pytest.raises(PacketFormatError) as info:
        split_packets(b"record_id,patient\n")
    assert not info.value.truncated


def armor(data: bytes, *, end: bool = True) -> bytes:
    encoded = base64.b64encode(data)
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    text = b"-----BEGIN PGP MESSAGE-----\nVersion: test\nComment: x\n\n" + b"\n".join(lines)
    text += b"\n=AbCd\n"
    return text + (b"-----END PGP MESSAGE-----\n" if end else b"")


def test_dearmor_skips_headers_and_checksum() -> None:
    payload = new_packet(18, bytes(range(256)) * 3)
    assert is_armored(b"\n  " + armor(payload)[:40])
    assert dearmor(armor(payload)) == payload


def test_dearmor_without_headers() -> None:
    payload = new_packet(1, b"abc")
    text = b"-----BEGIN PGP MESSAGE-----\n\n" + base64.b64encode(payload) + b"\n"
    assert dearmor(text + b"-----END PGP MESSAGE-----\n") == payload


def test_dearmor_without_end_line_is_truncated() -> None:
    with pytest.raises(PacketFormatError) as info:
        dearmor(armor(b"abc", end=False))
    assert info.value.truncated


def test_dearmor_rejects_garbage() -> None:
    with pytest.raises(PacketFormatError) as info:
        dearmor(b"-----BEGIN PGP MESSAGE-----\n\n!!!not base64!!!\n-----END PGP MESSAGE-----\n")
    assert not info.value.truncated


def test_file_looks_truncated_walks_headers_only(tmp_path: Path) -> None:
    whole = new_packet(1, b"k" * 20) + partial_packet(18, b"c" * 5000, chunk_power=9)
    path = tmp_path / "m.pgp"
    path.write_bytes(whole)
    assert not file_looks_truncated(path)
    for cut in (len(whole) - 1, len(whole) // 2, 10, 1):
        path.write_bytes(whole[:cut])
        assert file_looks_truncated(path), cut


def test_file_looks_truncated_checks_the_armor_end(tmp_path: Path) -> None:
    path = tmp_path / "m.asc"
    path.write_bytes(armor(b"x" * 10))
    assert not file_looks_truncated(path)
    path.write_bytes(armor(b"x" * 10, end=False))
    assert file_looks_truncated(path)


def test_garbage_file_is_not_called_truncated(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_bytes(b"record_id,patient\n")
    assert not file_looks_truncated(path)
