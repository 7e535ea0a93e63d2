"""The `with` protocol every test server shares, and the READY line they announce their port on."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import time

from batchbridge.connectors.lifecycle import StoppedOnExit as StopsOnExit

__all__ = ["StopsOnExit", "read_ready_port"]


def read_ready_port(process: subprocess.Popen[bytes], *, timeout: float, what: str) -> int:
    """The port of the `READY <port>` line `process` prints first; kill it if none comes.

    RuntimeError naming `what` and the exit code when the line is missing or late.
    """
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(timeout=remaining):
                break
            chunk = os.read(process.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    match = re.fullmatch(rb"READY (\d+)\n", line)
    if match is None:
        process.kill()
        process.wait(timeout=5)
        process.stdout.close()
        raise RuntimeError(f"{what} did not start (exit code {process.poll()})")
    return int(match.group(1))
