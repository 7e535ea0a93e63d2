"""Test servers and data the suites share: sshd, PostgreSQL, Prefect server, FHIR server,
fault proxy, webhook receiver, roster and HL7 data, a local steward feed. Not shipped."""
