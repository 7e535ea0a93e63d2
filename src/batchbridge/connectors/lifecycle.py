"""The `with` protocol shared by everything that holds a connection, a process or a server.

`with thing:` releases it on the way out, whatever happened inside: `close()` for
connectors and sessions, `stop()` for servers.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ClosedOnExit:
    """Base of a connector or session: leaving `with` calls `close()`."""

    def close(self) -> None:
        """Release what it holds; calling it again does nothing."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class StoppedOnExit:
    """Base of a server: leaving `with` calls `stop()` (a subclass may start it on enter)."""

    def stop(self) -> None:
        """Stop the server; calling it again does nothing."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
