"""FastAPI dependencies for pages: the steward service acting as the logged-in person."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from batchbridge.config.stewards import open_directory
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.service import StewardService
from batchbridge.web.csrf import require_csrf
from batchbridge.web.identity import Identity, current_identity, settings_of

__all__ = ["CsrfChecked", "CurrentIdentity", "Service", "steward_service"]


def steward_service(
    request: Request, identity: Annotated[Identity, Depends(current_identity)]
) -> Iterator[StewardService]:
    """The steward service on the configured ledger, acting as `identity` (the audit actor).

    The ledger and the stewards directory are opened per request (a directory edit takes
    effect at once, as for the CLI); the engine is disposed when the response is done.
    Sync: FastAPI runs it, and the `def` endpoints using it, in its thread pool.
    """
    settings = settings_of(request)
    store = LedgerStore.open_existing(settings.database_url)
    try:
        yield StewardService(
            store,
            config_dir=settings.config_dir,
            directory=open_directory(settings.config_dir),
            actor=identity.name,
        )
    finally:
        store.engine.dispose()


CurrentIdentity = Annotated[Identity, Depends(current_identity)]
"""An endpoint parameter: the logged-in person (else 303 to /login, or 401)."""

Service = Annotated[StewardService, Depends(steward_service)]
"""An endpoint parameter: the steward service acting as the logged-in person."""

CsrfChecked = Depends(require_csrf)
"""For `dependencies=[CsrfChecked]` on every state-changing route."""
