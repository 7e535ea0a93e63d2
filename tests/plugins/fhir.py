"""pytest fixtures: the FHIR R4 test server as a real process on 127.0.0.1."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.fhir_server import FhirServerProcess, start_fhir_server


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
    """The session's FHIR server, emptied: no resources, tokens, faults or reject codes."""
    fhir_server_process.reset()
    return fhir_server_process
