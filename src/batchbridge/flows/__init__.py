"""Prefect flows, and only they: nightly feed, quarantine replay, arrival check, health check.

One module per @flow (nightly, replay, arrivals, health), each with the helpers only it
uses beside it (nightly_file and feed_run for the nightly flow; tenant_slot, the
per-tenant concurrency slot the nightly flow holds). Deployments name them by module
path (`batchbridge.flows.nightly.nightly_feed`). May import tasks and everything below
them (services, connectors, validations, ledger, config, errors); never the CLI.
"""
