"""One run slot per tenant, held by a flow while it works (the tenant's concurrency limit)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from batchbridge.deploy.names import tenant_queue

logger = logging.getLogger(__name__)


@contextmanager
def tenant_slot(tenant: str) -> Iterator[None]:
    """Hold one of the tenant's run slots (global concurrency limit `tenant-<tenant>`).

    The tenant's work queue keeps waiting runs out of the workers, but its limit is
    checked as workers poll: two workers polling at the same instant (PostgreSQL skips
    rows the other poll locked) can each take one of the tenant's runs. This slot makes
    the second one wait here, so the limit holds. Where `batchbridge deploy --apply`
    made no such limit (local runs, tests), there is nothing to hold.
    """
    name = tenant_queue(tenant)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            limited = False
        else:
            limited = True
    if not limited:
        yield
        return
    asked = time.monotonic()
    # A lease renewal that fails once (an API blip) must not kill a run mid-load.
    with concurrency(name, occupy=1, strict=True, raise_on_lease_renewal_failure=False):
        waited = time.monotonic() - asked
        if waited >= 1:
            logger.info("tenant %s: waited %.1f s for a run slot (%s)", tenant, waited, name)
        yield
