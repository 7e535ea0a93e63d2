"""Connectors: everything that talks to the outside, each a Protocol + config + registry entry.

ssh/ (pinned host keys, one session), pgp/ (decryption engines, outbound encryption),
sources/ (SFTP, a local folder), targets/ (PostgreSQL, SQLite, outbound SFTP, FHIR),
webhook (alert delivery), retry (the one retry layer, tenacity, bounded) and secrets
(references resolved at the point of use). May import validations, ledger, config,
errors, crashpoints and progress; never the services, tasks, flows or the CLI.
"""
