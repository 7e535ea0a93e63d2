"""Shared pytest setup: fixture plugins for real sshd, PostgreSQL and gpg."""

pytest_plugins = [
    "tests.plugins.sshd",
    "tests.plugins.postgres",
    "tests.plugins.gpg",
    "tests.plugins.prefect",
    "tests.plugins.scenario",
    "tests.plugins.fhir",
]
