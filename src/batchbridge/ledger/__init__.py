"""The ledger: SQLAlchemy models, store and Alembic migrations for files, runs, loads,
quarantine and the audit log.

store moves each file's state forward and records runs and loads; quarantine_store
keeps rows encrypted (crypto); audit writes every steward action; locks keeps one run
per feed; run_report and runs_query shape what reports and `batchbridge runs` show;
migrate creates or upgrades the schema (migrations/ are Alembic's scripts). May import
config, errors and crashpoints only.
"""
