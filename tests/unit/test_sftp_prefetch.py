"""read_pipelined against a scripted SFTP request layer: each byte once, in order, bounded."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace
from typing import Any

import paramiko
import pytest
from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, SFTP_EOF, SFTP_PERMISSION_DENIED

from batchbridge.connectors.ssh.connect import (
    IN_FLIGHT_BYTES,
    MAX_READS_IN_FLIGHT,
    SAFE_READ_SIZE,
    read_pipelined,
)

HANDLE = SimpleNamespace(handle=b"h1")


class ScriptedServer:
    """The part of paramiko's SFTPClient that read_pipelined drives, serving `data`.

    Real OpenSSH answers every read in full and in order, so the cases it never shows are
    scripted here: replies capped at `cap` bytes (short reads), newest reply first (the
    protocol allows any order), and a permission error from `fail_at` on.
    """

    # paramiko's own status-to-exception mapping (EOFError at the end, OSError otherwise).
    _convert_status = paramiko.SFTPClient._convert_status  # type: ignore[attr-defined]

    def __init__(
        self,
        data: bytes,
        *,
        cap: int | None = None,
        newest_first: bool = False,
        fail_at: int | None = None,
    ) -> None:
        self.data = data
        self.cap = cap
        self.newest_first = newest_first
        self.fail_at = fail_at
        self.reads: list[tuple[int, int]] = []
        self.most_in_flight = 0
        self._in_flight: list[tuple[Any, int, int, paramiko.Message]] = []

    def _async_request(self, owner: Any, kind: int, handle: bytes, offset: int, size: int) -> int:
        assert (kind, handle) == (CMD_READ, HANDLE.handle)
        number = len(self.reads)
        self.reads.append((int(offset), size))
        self._in_flight.append((owner, number, *self._reply(int(offset), size)))
        self.most_in_flight = max(self.most_in_flight, len(self._in_flight))
        return number

    def _read_response(self) -> None:
        owner, number, kind, msg = self._in_flight.pop(-1 if self.newest_first else 0)
        owner._async_response(kind, msg, number)

    def _reply(self, offset: int, size: int) -> tuple[int, paramiko.Message]:
        msg = paramiko.Message()
        if self.fail_at is not None and offset + size > self.fail_at:
            msg.add_int(SFTP_PERMISSION_DENIED)
            msg.add_string("denied")
            msg.add_string("")
            return CMD_STATUS, paramiko.Message(msg.asbytes())
        chunk = self.data[offset : offset + min(size, self.cap or size)]
        if not chunk:
            msg.add_int(SFTP_EOF)
            msg.add_string("end of file")
            msg.add_string("")
            return CMD_STATUS, paramiko.Message(msg.asbytes())
        msg.add_string(chunk)
        return CMD_DATA, paramiko.Message(msg.asbytes())


def read_all(server: ScriptedServer, length: int, **options: Any) -> bytes:
    client: Any = server
    handle: Any = HANDLE
    return b"".join(read_pipelined(client, handle, length, **options))


def times_asked(reads: list[tuple[int, int]], end: int) -> set[int]:
    """How many times each byte below `end` was asked for (the set of distinct counts)."""
    counts = bytearray(end)
    for offset, size in reads:
        for position in range(offset, min(offset + size, end)):
            counts[position] += 1
    return set(counts)


def test_reads_each_byte_once_in_order_with_a_bounded_pipeline() -> None:
    data = os.urandom(300_000 + 5)
    server = ScriptedServer(data, newest_first=True)
    # One byte past the end, as the source asks: the file did not grow.
    assert read_all(server, len(data) + 1, read_size=8192, depth=6) == data
    assert times_asked(server.reads, len(data)) == {1}
    assert server.most_in_flight == 6
    assert all(size <= 8192 for _, size in server.reads)


def test_short_replies_are_asked_again_and_shrink_the_later_reads() -> None:
    data = os.urandom(200_000)
    server = ScriptedServer(data, cap=10_000)
    assert read_all(server, len(data) + 1, read_size=SAFE_READ_SIZE, depth=4) == data
    # The four first reads went out at full size; once short replies came, new reads ask
    # for 10 kB, and only the rests of those four ask for more.
    assert [size for _, size in server.reads[:4]] == [SAFE_READ_SIZE] * 4
    assert {size for _, size in server.reads[4:] if size > 10_000} == {22_768, 12_768}
    # Four full reads, three more for the rest of each, seven new ones, the byte past the end.
    assert len(server.reads) == 24


def test_stops_at_length_when_the_file_grew_and_at_its_end_when_it_shrank() -> None:
    data = os.urandom(100_000)
    grown = ScriptedServer(data)
    assert read_all(grown, 60_001, read_size=SAFE_READ_SIZE) == data[:60_001]
    assert sum(size for _, size in grown.reads) == 60_001
    assert read_all(ScriptedServer(data[:50_000]), 60_001) == data[:50_000]
    assert read_all(ScriptedServer(b""), 1) == b""


def test_an_error_reply_raises_after_the_bytes_before_it() -> None:
    data = os.urandom(100_000)
    got: list[bytes] = []
    client: Any = ScriptedServer(data, fail_at=70_000)
    handle: Any = HANDLE
    with pytest.raises(PermissionError) as caught:
        for chunk in read_pipelined(client, handle, len(data) + 1, read_size=SAFE_READ_SIZE):
            got.append(chunk)
    assert caught.value.errno == errno.EACCES
    assert b"".join(got) == data[:65_536]


@pytest.mark.parametrize(
    ("read_size", "depth"),
    [(SAFE_READ_SIZE, MAX_READS_IN_FLIGHT), (261_120, IN_FLIGHT_BYTES // 261_120)],
)
def test_default_depth_keeps_the_in_flight_bytes_and_request_count_bounded(
    read_size: int, depth: int
) -> None:
    data = os.urandom(8 * 1024 * 1024)
    server = ScriptedServer(data)
    assert read_all(server, len(data) + 1, read_size=read_size) == data
    assert server.most_in_flight == depth
    assert depth * read_size <= IN_FLIGHT_BYTES


def test_a_plain_sftp_client_reads_the_size_every_server_accepts() -> None:
    server = ScriptedServer(os.urandom(100_000))
    read_all(server, 100_001)
    # 100_001 = 3 * 32768 + 1697: the last read is short by the byte past the end.
    assert server.reads[:3] == [(n * SAFE_READ_SIZE, SAFE_READ_SIZE) for n in range(3)]
    assert server.reads[3:] == [(3 * SAFE_READ_SIZE, 1697), (100_000, 1)]
