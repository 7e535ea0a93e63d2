"""The `with` protocol every test server shares: leaving the block stops the server."""

from batchbridge.connectors.lifecycle import StoppedOnExit as StopsOnExit

__all__ = ["StopsOnExit"]
