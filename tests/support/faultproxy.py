"""A loopback TCP proxy that injects network faults (reset, stall, truncate) into tests."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

__all__ = ["Direction", "Fault", "FaultKind", "FaultProxy"]

FaultKind = Literal["pass", "reset", "stall", "truncate"]
Direction = Literal["downstream", "upstream"]
"""downstream: server -> client bytes; upstream: client -> server bytes."""

_CHUNK = 65536
# Hard ceilings so that a forgotten proxy or a runaway client cannot outlive the test run.
_DEFAULT_LIFETIME_SECONDS = 900.0
_DEFAULT_MAX_CONNECTIONS = 2000
_START_TIMEOUT_SECONDS = 10.0
_STOP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Fault:
    """What to do to connections once `after_bytes` bytes flowed in `direction`.

    Bytes are counted per connection from the moment the fault is armed (or the
    connection opened, if later), so a fault armed between two operations hits the
    second one. With `match`, the fault instead fires on the first chunk in
    `direction` that contains those bytes (that chunk is not forwarded): it aims at
    a protocol message, e.g. PostgreSQL's reply to COMMIT.

    reset: both sides get a TCP RST (SO_LINGER 0), as from a crashed middlebox.
    stall: nothing more is forwarded either way for `stall_seconds` (None: until the
    fault is cleared or the proxy stops), as on a black-holed route.
    truncate: both sides are closed cleanly (FIN), as by a proxy that gave up.
    `times`: how many connections get the fault (None: every one), so "the first
    attempt fails, the retry passes" is `times=1`.
    """

    kind: FaultKind
    after_bytes: int = 0
    direction: Direction = "downstream"
    stall_seconds: float | None = None
    times: int | None = 1
    match: bytes | None = None

    def __post_init__(self) -> None:
        if self.after_bytes < 0:
            raise ValueError("after_bytes must be >= 0")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for every connection)")
        if self.stall_seconds is not None and self.stall_seconds < 0:
            raise ValueError("stall_seconds must be >= 0")
        if self.match is not None and not self.match:
            raise ValueError("match must not be empty")


_PASS = Fault("pass", times=None)


@dataclass
class _Armed:
    """The fault in force, its generation (to restart byte counts) and its uses left."""

    fault: Fault
    generation: int
    remaining: int | None


@dataclass
class _Connection:
    """One proxied client connection and its upstream leg."""

    ident: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    counts: dict[Direction, int] = field(default_factory=lambda: {"downstream": 0, "upstream": 0})
    seen_generation: dict[Direction, int] = field(
        default_factory=lambda: {"downstream": -1, "upstream": -1}
    )
    stall_until: float = 0.0  # time.monotonic(); float("inf") until released
    closed: bool = False


class FaultProxy:
    """Forward 127.0.0.1:`port` to an upstream loopback server, with switchable faults.

    Runs an asyncio loop in a daemon thread. Only loopback addresses are accepted on
    either side. It stops by itself after `max_lifetime_seconds`, refuses connections
    beyond `max_connections`, and `close()` (or leaving `with`) ends every connection.
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
        self._armed = _Armed(_PASS, 0, None)
        self._faults_injected = 0
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

    def close(self) -> None:
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- faults -----------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Arm `fault` (replacing the one in force); byte counts restart from here."""
        with self._lock:
            generation = self._armed.generation + 1
            self._armed = _Armed(fault, generation, fault.times)
        if fault.kind != "stall":
            self._call(self._release_stalls)

    def clear(self) -> None:
        """Back to plain forwarding; connections stalled 'forever' resume."""
        self.inject(_PASS)

    @property
    def faults_injected(self) -> int:
        """How many times a fault fired (one per affected connection)."""
        with self._lock:
            return self._faults_injected

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
            # Bounded: the proxy ends itself even if nobody calls close().
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
                head, fired, tail = self._apply_fault(conn, direction, data)
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

    def _apply_fault(
        self, conn: _Connection, direction: Direction, data: bytes
    ) -> tuple[bytes, Fault | None, bytes]:
        """Split a chunk: (forward now, the fault that fires after it or None, the rest).

        With a matched fault the whole chunk is the rest: the aimed-at message never passes
        (a reset or truncation drops it; a stall holds it).
        """
        with self._lock:
            armed = self._armed
            fault = armed.fault
            if fault.kind == "pass" or fault.direction != direction:
                return data, None, b""
            if conn.seen_generation[direction] != armed.generation:
                conn.seen_generation[direction] = armed.generation
                conn.counts[direction] = 0
            before = conn.counts[direction]
            conn.counts[direction] += len(data)
            if fault.match is not None:
                if fault.match not in data:
                    return data, None, b""
                cut = 0
            else:
                if conn.counts[direction] <= fault.after_bytes:
                    return data, None, b""
                cut = max(0, fault.after_bytes - before)
            if armed.remaining is not None:
                if armed.remaining == 0:
                    return data, None, b""
                armed.remaining -= 1
            self._faults_injected += 1
        return data[:cut], fault, data[cut:]

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
