"""Monitoring: rules and checks that say when something is wrong, and alert delivery.

health_checks runs a feed's health checks (health_source, health_keys, health_targets;
results in health_model, rendered by health_report); alert_rules, arrival_rules and
alert_delivery decide and send alerts; preflight checks a feed offline before anything
runs. Plain functions over plain inputs: flows, tasks and the CLI call them. May import
connectors, validations, ledger, config and errors; never tasks, flows or the CLI, nor
Prefect.
"""
