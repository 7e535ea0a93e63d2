"""Only what `batchbridge demo` needs; synthetic data only (made-up patients).

An embedded SFTP server, key helpers, synthetic lab data (its catalogue of tests and
names, and the bad rows it plants), gpg-made partner files, the demo's work folder and
the feed scenario wiring them together. May import config, connectors, validations,
ledger and errors; never flows, tasks or the CLI, nor another service room (steward,
monitoring, onboarding, deploy), nor tests. What only tests use lives in tests/support.
"""
