"""pytest fixtures: FHIR R4 servers on 127.0.0.1.

- `real_fhir` (the tests of FHIR behaviour): a tenant of its own on one Medplum FHIR
  router process per session (tests/support/medplum_fhir.py; installed by
  `make fhir-server`). Missing install or Node.js: skipped, or failed under CI.
- `fhir_server` (fault injection only: 429/503/Retry-After, dropped connections, token
  expiry, a state file across restarts): the home-made server in tests/support/fhir_server/.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.plugins.missing import missing_part
from tests.support.fhir_server import FhirServerProcess, start_fhir_server
from tests.support.medplum_fhir import (
    FhirTenant,
    MedplumFhirServer,
    MedplumNotInstalledError,
    start_medplum_fhir,
)


@pytest.fixture(scope="session")
def real_fhir_server() -> Iterator[MedplumFhirServer]:
    """One Medplum FHIR router process per session, on a free loopback port."""
    try:
        server = start_medplum_fhir()
    except MedplumNotInstalledError as exc:
        missing_part(f"real FHIR server: {exc}")
    with server:
        yield server


@pytest.fixture
def real_fhir(real_fhir_server: MedplumFhirServer) -> FhirTenant:
    """A new, empty tenant (FHIR base URL of its own) on the session's real FHIR server."""
    return real_fhir_server.tenant()


@pytest.fixture(scope="session")
def fhir_server_process() -> Iterator[FhirServerProcess]:
    """One FHIR test server process per session, on a free loopback port, with fresh credentials."""
    with start_fhir_server(
        client_id=f"batchbridge-{secrets.token_hex(4)}",
        client_secret=secrets.token_urlsafe(24),
    ) as server:
        yield server


@pytest.fixture
def fhir_server(fhir_server_process: FhirServerProcess) -> FhirServerProcess:
    """The session's home-made FHIR server, emptied (no resources, tokens, faults, reject codes)."""
    fhir_server_process.reset()
    return fhir_server_process
