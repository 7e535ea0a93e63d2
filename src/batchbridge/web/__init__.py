"""The steward workbench: server-rendered pages over the steward service, in a browser.

Review, fix and release quarantined rows — masked by default, every look audited, each
person limited to their tenants. May import steward, ledger, validations, config and
errors; never flows, tasks or the CLI (`batchbridge steward serve` starts it).
"""
