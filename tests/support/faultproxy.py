"""A loopback TCP proxy that injects network faults (reset, stall, truncate) into tests.

The faults themselves (what fires when) are in tests.support.faults; this module moves
the bytes and carries a fired fault out on the sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.faults import PASS, ByteCounts, Direction, Fault, FaultKind, FaultSwitch
from tests.support.lifecycle import StopsOnExit

__all__ = ["Direction", "Fault", "FaultKind", "FaultProxy"]

_CHUNK = 65536
# Hard ceilings so that a forgotten proxy or a runaway client cannot outlive the test run.
_DEFAULT_LIFETIME_SECONDS = 900.0
_DEFAULT_MAX_CONNECTIONS = 2000
_START_TIMEOUT_SECONDS = 10.0
_STOP_TIMEOUT_SECONDS = 10.0


@dataclass
class _Connection:
    """One proxied client connection and its upstream leg."""

    ident: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    seen: ByteCounts = field(default_factory=ByteCounts)
    stall_until: float = 0.0  # time.monotonic(); float("inf") until released
    closed: bool = False


class FaultProxy(StopsOnExit):
    """Forward 127.0.0.1:`port` to an upstream loopback server, with switchable faults.

    Runs an asyncio loop in a daemon thread. Only loopback addresses are accepted on
    either side. It stops by itself after `max_lifetime_seconds`, refuses connections
    beyond `max_connections`, and `stop()` (or leaving `with`) ends every connection.
    `faults_injected` counts the faults that actually fired.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        max_lifetime_seconds: float = _DEFAULT_LIFETIME_SECONDS,
        max_connections: int = _DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        for host in (upstream_host, listen_host):
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError(f"FaultProxy works on loopback addresses only, not {host!r}")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self.max_lifetime_seconds = max_lifetime_seconds
        self.max_connections = max_connections
        self.port = 0
        self._lock = threading.Lock()
        self._switch = FaultSwitch()
        self._accepted = 0
        self._bytes: dict[Direction, int] = {"downstream": 0, "upstream": 0}
        self._connections: dict[int, _Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._released: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind a free port and start forwarding; returns once the port listens."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_SECONDS):
            raise RuntimeError("FaultProxy did not start in time")
        if self._start_error is not None:
            raise RuntimeError("FaultProxy could not start") from self._start_error
        return self

    def stop(self) -> None:
        """Stop listening, reset every open connection and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive() and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._stopping.set)
        thread.join(_STOP_TIMEOUT_SECONDS)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    # -- faults -----------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Arm `fault` (replacing the one in force); byte counts restart from here."""
        self._switch.arm(fault)
        if fault.kind != "stall":
            self._call(self._release_stalls)

    def clear(self) -> None:
        """Back to plain forwarding; connections stalled 'forever' resume."""
        self.inject(PASS)

    @property
    def faults_injected(self) -> int:
        """How many times a fault fired (one per affected connection)."""
        return self._switch.fired

    @property
    def connections_accepted(self) -> int:
        """Client connections accepted so far."""
        with self._lock:
            return self._accepted

    def bytes_forwarded(self, direction: Direction) -> int:
        """Bytes forwarded in `direction` over all connections so far."""
        with self._lock:
            return self._bytes[direction]

    def open_connections(self) -> int:
        """Connections currently open."""
        with self._lock:
            return sum(1 for conn in self._connections.values() if not conn.closed)

    # -- the loop thread --------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            # Let aborted transports finish their callbacks before the loop goes away.
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._released = asyncio.Event()
        try:
            server = await asyncio.start_server(self._handle, self.listen_host, 0)
        except OSError as exc:
            self._start_error = exc
            self._ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        tasks = self._tasks
        try:
            # Bounded: the proxy ends itself even if nobody calls stop().
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.max_lifetime_seconds)
        finally:
            server.close()
            with self._lock:
                open_now = list(self._connections.values())
            for conn in open_now:
                self._abort(conn)
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_SECONDS)
            await server.wait_closed()

    def _call(self, fn: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn)

    def _release_stalls(self) -> None:
        with self._lock:
            open_now = list(self._connections.values())
        for conn in open_now:
            conn.stall_until = 0.0
        if self._released is not None:
            # Wake every waiter, then re-arm the event for the next stall.
            self._released.set()
            self._released = asyncio.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        with self._lock:
            self._accepted += 1
            ident = self._accepted
            conn = _Connection(ident, writer)
            self._connections[ident] = conn
        try:
            if ident > self.max_connections:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                return
            conn.upstream = up_writer
            await asyncio.gather(
                self._pump(conn, reader, up_writer, "upstream"),
                self._pump(conn, up_reader, writer, "downstream"),
            )
        except asyncio.CancelledError:
            pass
        finally:
            self._close(conn)
            with self._lock:
                self._connections.pop(ident, None)
            if task is not None:
                self._tasks.discard(task)

    async def _pump(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        try:
            while not conn.closed:
                data = await reader.read(_CHUNK)
                if not data:
                    # Half-close: pass the FIN on (not through a stall), keep the other
                    # direction flowing.
                    await self._wait_unstalled(conn)
                    if not conn.closed and writer.can_write_eof():
                        writer.write_eof()
                    return
                head, fired, tail = self._switch.split(conn.seen, direction, data)
                await self._forward(conn, writer, direction, head)
                if fired is not None and fired.kind == "reset":
                    self._abort(conn)
                    return
                if fired is not None and fired.kind == "truncate":
                    self._close(conn)
                    return
                if fired is not None and fired.kind == "stall":
                    fault = fired
                    conn.stall_until = (
                        float("inf")
                        if fault.stall_seconds is None
                        else time.monotonic() + fault.stall_seconds
                    )
                # Whatever a stall held back goes on once it ends.
                await self._forward(conn, writer, direction, tail)
        except (OSError, RuntimeError):
            # A side went away (reset, closed): end the whole connection.
            self._close(conn)

    async def _forward(
        self, conn: _Connection, writer: asyncio.StreamWriter, direction: Direction, data: bytes
    ) -> None:
        if not data:
            return
        await self._wait_unstalled(conn)
        if conn.closed:
            return
        writer.write(data)
        await writer.drain()
        with self._lock:
            self._bytes[direction] += len(data)

    async def _wait_unstalled(self, conn: _Connection) -> None:
        while not conn.closed and self._stopping is not None and not self._stopping.is_set():
            remaining = conn.stall_until - time.monotonic()
            if remaining <= 0:
                return
            released = self._released
            assert released is not None
            waiters = [
                asyncio.ensure_future(released.wait()),
                asyncio.ensure_future(self._stopping.wait()),
            ]
            timeout = None if remaining == float("inf") else remaining
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                # Also when this connection is cancelled at shutdown: no task left pending.
                for waiter in waiters:
                    waiter.cancel()

    # -- ending connections -----------------------------------------------------------

    def _close(self, conn: _Connection) -> None:
        """Close both legs cleanly (FIN)."""
        if conn.closed:
            return
        conn.closed = True
        for writer in (conn.client, conn.upstream):
            if writer is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()

    def _abort(self, conn: _Connection) -> None:
        """Reset both legs: SO_LINGER 0 makes the close send RST instead of FIN."""
        conn.closed = True
        for writer in (conn.client, conn.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError, RuntimeError):
                writer.transport.abort()
