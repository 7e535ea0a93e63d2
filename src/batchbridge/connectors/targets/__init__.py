"""Targets: where a file's valid rows are loaded, each a `Target` (base.py) opened from its
feed config by the explicit registry (registry.py). PostgreSQL (postgres.py, with its psycopg
specifics in postgres_driver.py) and SQLite (sqlite.py, the embedded default) share one SQL
plan (sql_plan.py: columns and statements) carried out alike (sql_target.py: the shared
steps and API); fhir/ loads a FHIR R4 server; sftp_out.py with extract.py delivers
outbound extract files. rows.py holds the checks every target makes on a request, and
loading.py loads one file into every target and reconciles the counts. May import config,
validations, ledger, errors, crashpoints, progress and the other connectors (retry,
secrets, ssh, pgp, webhook); never tasks, flows, cli, steward or monitoring.
"""
