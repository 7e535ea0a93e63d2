"""Deployments: deployments/prefect.yaml generated from the feed YAMLs, and applied.

tables lists the deployments (one row per flow) and tenant limits; prefect_yaml renders,
checks and applies the file and holds the workers' pull step; names are the work pool
and queue names a flow run shares with its deployment. May import config and errors
(Prefect only inside the functions that talk to its API); never flows, tasks, the CLI
or the other services: flows are named by their dotted module paths.
"""
