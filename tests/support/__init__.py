"""Test servers and the data they serve, shared by every suite and the benchmark; never shipped.

Real OpenSSH sshd and PostgreSQL started on loopback, a Prefect server, a FHIR server, the
fault proxy, a webhook receiver, synthetic roster and HL7 files, what the synthetic lab's
bad rows must cause, and the feed scenarios only tests and the benchmark use. Plain
library code, type-checked strictly with the package: no pytest fixtures (those are in
tests/plugins). May import batchbridge (any room) and each other; never tests.plugins or
a suite. The package never imports from here (tests/unit/test_package_contents.py).
"""
