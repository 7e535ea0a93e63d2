"""`batchbridge steward serve`: the steward workbench in the browser, served by uvicorn.

Loopback (127.0.0.1) by default; behind an https reverse proxy in production. The
local login (demo, tests) is refused on any other address. Secret references are
resolved here (the web room may not reach connectors). uvicorn's access log is off: the
app logs method, route template and status itself, never a URL's query string.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from batchbridge.cli.output import note
from batchbridge.cli.params import ConfigDirOption

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

app = typer.Typer(
    help="Data stewards' tools beyond the quarantine commands: the workbench in the browser.",
    no_args_is_help=True,
)


def _resolve(reference: str) -> str:
    from batchbridge.connectors.secrets import resolve_secret

    return resolve_secret(reference).get_secret_value()


def _log_to_stderr() -> None:
    # The app's own lines (access, errors, logins) beside uvicorn's; none carries PHI.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    web = logging.getLogger("batchbridge.web")
    web.addHandler(handler)
    web.setLevel(logging.INFO)
    web.propagate = False


@app.command("serve")
def serve_command(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback by default).")
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = DEFAULT_PORT,
    config_dir: ConfigDirOption = None,
    auth: Annotated[
        str | None,
        typer.Option(
            "--auth",
            help="Login mode: oidc, header (trusted proxy) or local (demo/tests, loopback "
            "only). Default: $BATCHBRIDGE_WEB_AUTH, else local.",
            show_default=False,
        ),
    ] = None,
    users_file: Annotated[
        Path | None,
        typer.Option(
            "--users-file",
            help="The local login's users file (default: $BATCHBRIDGE_WEB_USERS_FILE, "
            "else web-users.yaml beside the feeds folder).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the steward workbench until interrupted (Ctrl-C)."""
    import uvicorn

    from batchbridge.config.settings import load_settings
    from batchbridge.config.stewards import open_directory
    from batchbridge.ledger.store import LedgerStore
    from batchbridge.web.app import create_app
    from batchbridge.web.settings import settings_from_env

    settings = load_settings(config_dir)
    web_settings = settings_from_env(
        config_dir=settings.config_dir,
        database_url=settings.database_url,
        host=host,
        resolve_secret=_resolve,
        auth=auth,
        users_file=users_file,
    )
    # Setup mistakes fail here, in one line, rather than on the first page view.
    LedgerStore.open_existing(settings.database_url).engine.dispose()
    open_directory(settings.config_dir)
    workbench = create_app(web_settings)
    _log_to_stderr()
    shown_host = f"[{host}]" if ":" in host else host
    note(
        f"steward workbench: http://{shown_host}:{port}/ (login: {web_settings.auth}"
        f"{', session secret generated for this run' if not web_settings.session_secret else ''}"
        "); Ctrl-C stops it"
    )
    uvicorn.run(
        workbench,
        host=host,
        port=port,
        access_log=False,
        # The peer address must be the proxy's own (trusted-header login), never one a
        # client wrote into X-Forwarded-For.
        proxy_headers=False,
        server_header=False,
        log_level="info",
    )
