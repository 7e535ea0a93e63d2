"""The steward service: look at, fix, exchange and release quarantined rows; rotate their keys.

Shared by the CLI and the web workbench, every action checked and audited. May import
connectors, validations, ledger, config and errors; never flows, tasks, the CLI or the
other services (monitoring, onboarding, deploy, demo).
"""
