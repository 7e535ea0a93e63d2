"""pytest fixtures: one real PostgreSQL cluster per session, a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.plugins.missing import missing_part
from tests.support.postgres import PostgresNotFoundError, PostgresServer, start_postgres


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL cluster on 127.0.0.1 for the whole session (initdb costs ~1-2 s)."""
    try:
        server = start_postgres(tmp_path_factory.mktemp("postgres"))
    except PostgresNotFoundError as exc:
        missing_part(f"PostgreSQL not installed: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a new, randomly named database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)
