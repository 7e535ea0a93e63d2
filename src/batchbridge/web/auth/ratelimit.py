"""Failed-login counting per client address and per user name, in this process's memory.

After `max_failures` failures within `window_seconds` under one key, logins for that
key are refused (429 with Retry-After) until the oldest counted failure leaves the
window. In memory: a restart forgets, and several server processes count separately;
the demo and a single-process deployment need no more (put a proxy's limit in front
of a larger one).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable

MAX_KEYS = 10_000
"""Keys remembered at most; past that, keys with no recent failure are dropped first."""


class LoginLimiter:
    """Sliding-window failure counter; keys are strings such as `addr:…` and `user:…`."""

    def __init__(
        self, *, max_failures: int, window_seconds: int, clock: Callable[[], float]
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, keys: Iterable[str]) -> int | None:
        """Seconds to wait when any key is blocked; None when a login may be tried."""
        now = self.clock()
        waits = []
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self.max_failures:
                waits.append(times[0] + self.window - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, keys: Iterable[str]) -> None:
        """Count one failure under every key."""
        now = self.clock()
        if len(self._failures) >= MAX_KEYS:
            for key in list(self._failures):
                self._recent(key, now)
            # Still full (a flood of fresh keys): the oldest keys go, the limit stays bounded.
            for key in list(self._failures)[: max(0, len(self._failures) - MAX_KEYS + 1)]:
                del self._failures[key]
        for key in keys:
            times = self._failures.setdefault(key, deque())
            times.append(now)
            while len(times) > self.max_failures:
                times.popleft()

    def succeeded(self, key: str) -> None:
        """Forget the failures under `key` (the user name, after a right password)."""
        self._failures.pop(key, None)
