"""The `with` protocol every test server shares: leaving the block stops the server."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StopsOnExit:
    """Base of a test server: `with server:` stops it on the way out, whatever happened.

    A server whose `with` should also start it overrides `__enter__`.
    """

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
