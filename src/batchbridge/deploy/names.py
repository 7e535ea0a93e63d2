"""Names a deployment and a flow run agree on: the work pool, each tenant's queue and slot."""

from __future__ import annotations

WORK_POOL = "batchbridge"
"""The process work pool every deployment runs in."""


def tenant_queue(tenant: str) -> str:
    """The work queue (in WORK_POOL) that holds a tenant's flow runs.

    Also the name of the tenant's global concurrency limit (see `tenant_slot`).
    """
    return f"tenant-{tenant}"
