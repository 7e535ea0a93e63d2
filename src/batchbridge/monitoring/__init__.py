"""Monitoring: rules that decide when something is wrong (late files, expiring keys, health).

Pure rules and checks over config, connectors and the ledger; flows and the CLI call
them. Nothing here imports Prefect, flows, tasks or the CLI.
"""
