"""The acting steward for one command: the service on the configured ledger, closed after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batchbridge.config.settings import load_settings
from batchbridge.steward.service import StewardService


@contextmanager
def steward_service(config_dir: Path | None) -> Iterator[StewardService]:
    """The person acting (BATCHBRIDGE_ACTOR or OS login) on the configured ledger."""
    service = StewardService.from_settings(load_settings(config_dir))
    try:
        yield service
    finally:
        service.store.engine.dispose()
