"""A small home-made FHIR R4 server for tests, run as its own process, kept for fault
injection only: 429/503 with or without Retry-After, dropped connections (resets), expired
tokens and OAuth2 errors, a state file across restarts. What a FHIR server does with our
Bundles (conditional create/update, transactions, validation, OperationOutcomes, paging)
is tested against a real server, Medplum's FHIR router (tests/support/medplum_fhir.py,
fixture `real_fhir`); where the two differ, the real one is right.

Modules: `store` (resources, identifier index, faults, tokens), `transactions`
(validation, atomic transactions with conditional create/update, identifier search),
`handler` (HTTP routes, OAuth2 client credentials, fault injection, admin routes, `serve`,
which `python -m tests.support.fhir_server` runs) and `launcher` (`start_fhir_server`: the
subprocess and a `FhirServerProcess` handle with admin helpers). It speaks HTTP on loopback
only and imports nothing of batchbridge; tests and tests/plugins import it from here,
never the other way round.
"""

from tests.support.fhir_server.handler import FhirHttpServer, Handler, serve
from tests.support.fhir_server.launcher import FhirServerProcess, start_fhir_server
from tests.support.fhir_server.store import (
    Fault,
    FhirFailure,
    ServerState,
    Store,
    operation_outcome,
    parse_match_url,
    parse_tokens,
    split_unescaped,
)
from tests.support.fhir_server.transactions import (
    CAPABILITY_STATEMENT,
    FHIR_BASE,
    read_resource,
    run_transaction,
    search,
    update_by_id,
    validate_resource,
)

__all__ = [
    "CAPABILITY_STATEMENT",
    "FHIR_BASE",
    "Fault",
    "FhirFailure",
    "FhirHttpServer",
    "FhirServerProcess",
    "Handler",
    "ServerState",
    "Store",
    "operation_outcome",
    "parse_match_url",
    "parse_tokens",
    "read_resource",
    "run_transaction",
    "search",
    "serve",
    "split_unescaped",
    "start_fhir_server",
    "update_by_id",
    "validate_resource",
]
