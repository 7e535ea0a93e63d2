"""Prefect tasks, and only they: one module per stage, each a thin @task over a pure function.

discover, fetch, stream (decrypt, validate and transform, chunk by chunk), quarantine,
load, reconcile, report,
alerts, health; guard makes a pure function such a task, one that can never leak
patient data. The function each wraps lives in connectors, validations, ledger or
monitoring and is tested without Prefect. May import the services, connectors,
validations, ledger, config and errors; never flows or the CLI.
"""
