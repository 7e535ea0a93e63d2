"""A small FHIR R4 server for tests, run as its own process (no maintained FHIR server
installs from the package registries this project uses): `store` (resources, identifier
index, faults, tokens), `transactions` (validation, atomic transactions with conditional
create/update, identifier search), `handler` (HTTP routes, OAuth2 client credentials,
fault injection, admin routes, `serve`, which `python -m tests.support.fhir_server`
runs) and `launcher` (`start_fhir_server`: the subprocess and a `FhirServerProcess`
handle with admin helpers). It speaks HTTP on loopback only and imports nothing of
batchbridge, so the target is tested against an independent implementation; tests and
tests/plugins import it from here, never the other way round.
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
    run_transaction,
    search,
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
    "run_transaction",
    "search",
    "serve",
    "split_unescaped",
    "start_fhir_server",
    "validate_resource",
]
