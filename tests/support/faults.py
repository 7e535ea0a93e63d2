"""Which network fault fires when: the fault model and the switch a FaultProxy consults."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal["pass", "reset", "stall", "truncate"]
Direction = Literal["downstream", "upstream"]
"""downstream: server -> client bytes; upstream: client -> server bytes."""


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


PASS = Fault("pass", times=None)
"""Plain forwarding: the fault in force when none is."""


@dataclass
class _Armed:
    """The fault in force, its generation (to restart byte counts) and its uses left."""

    fault: Fault
    generation: int
    remaining: int | None


@dataclass
class ByteCounts:
    """Bytes one connection moved each way since the fault in force was armed."""

    counts: dict[Direction, int] = field(default_factory=lambda: {"downstream": 0, "upstream": 0})
    seen_generation: dict[Direction, int] = field(
        default_factory=lambda: {"downstream": -1, "upstream": -1}
    )


class FaultSwitch:
    """The fault in force for every connection of a proxy, and how often one fired.

    Thread-safe: armed from the test's thread, consulted from the proxy's loop thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed = _Armed(PASS, 0, None)
        self._fired = 0

    def arm(self, fault: Fault) -> None:
        """Put `fault` in force (replacing the one before); byte counts restart from here."""
        with self._lock:
            self._armed = _Armed(fault, self._armed.generation + 1, fault.times)

    @property
    def fired(self) -> int:
        """How many times a fault fired (one per affected connection)."""
        with self._lock:
            return self._fired

    def split(
        self, seen: ByteCounts, direction: Direction, data: bytes
    ) -> tuple[bytes, Fault | None, bytes]:
        """Split a chunk: (forward now, the fault that fires after it or None, the rest).

        `seen` is the connection's byte counts, updated here. With a matched fault the
        whole chunk is the rest: the aimed-at message never passes (a reset or
        truncation drops it; a stall holds it).
        """
        with self._lock:
            armed = self._armed
            fault = armed.fault
            if fault.kind == "pass" or fault.direction != direction:
                return data, None, b""
            if seen.seen_generation[direction] != armed.generation:
                seen.seen_generation[direction] = armed.generation
                seen.counts[direction] = 0
            before = seen.counts[direction]
            seen.counts[direction] += len(data)
            if fault.match is not None:
                if fault.match not in data:
                    return data, None, b""
                cut = 0
            else:
                if seen.counts[direction] <= fault.after_bytes:
                    return data, None, b""
                cut = max(0, fault.after_bytes - before)
            if armed.remaining is not None:
                if armed.remaining == 0:
                    return data, None, b""
                armed.remaining -= 1
            self._fired += 1
        return data[:cut], fault, data[cut:]
