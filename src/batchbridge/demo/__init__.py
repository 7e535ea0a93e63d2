"""Only what `batchbridge demo` needs: an embedded SFTP server, key helpers, synthetic lab
data, gpg-made partner files and the feed scenario wiring them together.

Synthetic data only (made-up patients). May import config, connectors, validations,
ledger and errors; never flows, tasks or the CLI. The test servers live in tests/support.
"""
