"""Deployments: deployments/prefect.yaml generated from the feed YAMLs, and applied.

May import config and errors (Prefect only inside the functions that talk to its API);
never flows, tasks or the CLI: flows are named by their dotted entrypoints.
"""
