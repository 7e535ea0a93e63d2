"""Onboarding a partner: scaffold its feed YAML, fetch and pin host keys, dry-run a sample.

feed_yaml writes the scaffold, host_keys fetches the keys to pin, secrets_needed and
stewards_file say what else the feed needs, dry_run takes a sample file through every
stage without loading it. May import connectors, validations, ledger, config and
errors; never flows, tasks, the CLI or the other services.
"""
