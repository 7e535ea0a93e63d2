"""Onboarding a partner: scaffold its feed YAML, fetch and pin host keys, dry-run a sample.

May import config, connectors, validations and the ledger; never flows, tasks or the CLI.
"""
