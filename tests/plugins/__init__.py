"""pytest fixture plugins, registered by tests/conftest.py: sshd, PostgreSQL, gpg, Prefect, FHIR,
browser (system Chromium via Playwright) and the steward workbench server.

Each module turns a server or helper of tests/support into fixtures (started once per
session or module, stopped after; when its binary is missing, `missing_part` skips on a
developer machine and fails in CI), plus small factories over them (SFTP configs, the lab
feed scenario). May import tests.support, batchbridge and pytest; never a suite (unit,
integration, reliability): the suites are the ones that use these.
"""
