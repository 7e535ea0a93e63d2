"""batchbridge: nightly healthcare batch files from SFTP to loaded, reconciled, audited results.

The package's folders are its rooms, each holding one kind of thing (DESIGN.md, layout):
cli, then flows, tasks, the services (steward, monitoring, onboarding, deploy, demo),
connectors, validations, ledger and config; errors, crashpoints and progress are the
floor. Imports point one way, down that list: `lint-imports` checks it against the
contracts in pyproject.toml ([tool.importlinter]), lazy and TYPE_CHECKING imports too.
"""
