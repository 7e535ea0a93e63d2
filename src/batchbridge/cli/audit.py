"""`batchbridge audit verify`: recompute the audit log's hash chain."""

from __future__ import annotations

import typer

from batchbridge.cli.params import ConfigDirOption
from batchbridge.config.settings import load_settings
from batchbridge.errors import AuditChainError
from batchbridge.ledger.audit import verify_chain
from batchbridge.ledger.store import LedgerStore

app = typer.Typer(
    help="The audit log of every steward look, change and release.", no_args_is_help=True
)


@app.command("verify")
def verify_command(config_dir: ConfigDirOption = None) -> int:
    """Check the hash chain: find edited, inserted and deleted events (exit 11 if broken)."""
    store = LedgerStore.open_existing(load_settings(config_dir).database_url)
    try:
        with store.session() as s:
            checked = verify_chain(s)
    finally:
        store.engine.dispose()
    if checked.ok:
        print(f"audit log: {checked.events} event(s) checked, chain intact")
        return 0
    print(f"audit log: {checked.events} event(s) checked, {len(checked.problems)} problem(s):")
    for problem in checked.problems:
        print(f"  - {problem}")
    return AuditChainError.exit_code
