"""Validation and transformation of a file's rows: what a partner's data must be, and what
it becomes before it is loaded.

readers/ parse plaintext into all-string rows (formats picks the reader a feed names);
schemas/ holds one schema per feed kind (registry finds it by name, base says what it
provides), built from checks and rules; parse runs a file through both, splitting
valid rows from quarantined ones with the column and rule that failed; mapping loads
code tables, transform shapes rows per target, quarantine encrypts the invalid ones;
contract checks a file's listing, marker and declared counts. May import the ledger,
config, errors and crashpoints; never connectors (one known exception, listed in
pyproject's import contracts), services, tasks, flows or the CLI.
"""
