"""Where the CLI's flows find their Prefect API, and how Prefect behaves at a terminal."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def set_prefect_defaults() -> None:
    """Environment defaults read by Prefect when it is first imported (set before that)."""
    # No telemetry from an air-gapped healthcare network.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "batchbridge")


@contextmanager
def prefect_api() -> Iterator[None]:
    """A Prefect API for the flows run inside this block (today: Prefect's own choice)."""
    yield
