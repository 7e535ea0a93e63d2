"""`batchbridge keys rotate`: re-encrypt a feed's quarantined rows under its current key."""

from __future__ import annotations

from typing import Annotated

import typer

from batchbridge.cli.params import ConfigDirOption
from batchbridge.cli.steward_session import steward_service

app = typer.Typer(help="Quarantine encryption keys (admins).", no_args_is_help=True)


@app.command("rotate")
def rotate_command(
    feed: Annotated[str, typer.Option("--feed", help="The feed whose rows to re-encrypt.")],
    config_dir: ConfigDirOption = None,
) -> int:
    """Re-encrypt rows and edits under the feed's current quarantine key (audited)."""
    with steward_service(config_dir) as service:
        rows = service.rotate_keys(feed)
    print(f"feed {feed}: {rows} row(s) re-encrypted under the current key")
    return 0
