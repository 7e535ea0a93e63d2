"""Where the CLI's flows find their Prefect API, and how Prefect behaves at a terminal.

Prefect reads most of its settings once, when it is first imported; `set_prefect_defaults`
runs before that (from `main()`), and `prefect_api()` wraps every in-process flow call.
Nothing here imports Prefect at module level: commands that run no flow must start fast.
"""

from __future__ import annotations

import copy
import logging
import os
import ssl
import sys
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchbridge.cli.output import note

# Re-exported: server.py and the tests import the state file's names from here too.
from batchbridge.cli.prefect_server_state import LocalServer as LocalServer
from batchbridge.cli.prefect_server_state import find_local_server as find_local_server
from batchbridge.cli.prefect_server_state import process_group_alive as process_group_alive
from batchbridge.cli.prefect_server_state import read_local_server as read_local_server
from batchbridge.cli.prefect_server_state import remove_local_server as remove_local_server
from batchbridge.cli.prefect_server_state import state_path as state_path
from batchbridge.cli.prefect_server_state import write_local_server as write_local_server
from batchbridge.config.settings import DEFAULT_VAR_DIR
from batchbridge.errors import OrchestratorError

if TYPE_CHECKING:
    from prefect.settings import Settings

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_TIMEOUT_SECONDS = 180
"""Temporary-server start limit unless the user set one (Prefect's 20 s is too short for
the first start on a slow 2-core machine, which migrates Prefect's database)."""

HEALTH_TIMEOUT_SECONDS = 5.0
TERMINAL_HANDLER = f"{__name__}.TerminalLogHandler"

# Prefect's logging.yml may be overridden key by key from the environment
# (prefect/logging/configuration.py, load_logging_config): these two shape its console
# handler. `batchbridge server start` leaves them out of the server's own log. CRITICAL:
# every failure a flow meets is in the report (or the one-line error) the CLI prints;
# Prefect's ERROR lines would say it again, four times. The Prefect UI keeps them all.
TERMINAL_LOGGING_DEFAULTS = {
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS": TERMINAL_HANDLER,
}

TEMPORARY_SERVER_NOTE = (
    "starting a temporary Prefect server (its first start migrates its database, up to a "
    "minute; `batchbridge server start` keeps one running)"
)


def prefect_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """The Prefect settings the CLI sets in `environ` where they are not set already."""
    var_dir = Path(environ.get("BATCHBRIDGE_VAR_DIR") or DEFAULT_VAR_DIR).resolve()
    defaults = {
        # Project-local: profiles, the temporary server's database and `batchbridge server`
        # state live beside the ledger, not in a developer's ~/.prefect.
        "PREFECT_HOME": str(var_dir / "prefect"),
        # No telemetry from an air-gapped healthcare network: Prefect's server side, and
        # its SDK side (which also prints a first-run notice at a terminal).
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "batchbridge",
        # batchbridge's loggers also run outside flow runs (CLI, ledger): Prefect would
        # warn each time that such a record cannot go to its API.
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    # A developer debugging Prefect wants its tracebacks and INFO lines at the terminal.
    if not environ.get("BATCHBRIDGE_DEBUG"):
        defaults.update(TERMINAL_LOGGING_DEFAULTS)
    return {key: value for key, value in defaults.items() if not environ.get(key)}


def set_prefect_defaults() -> None:
    """Environment defaults read by Prefect when it is first imported (set before that).

    A variable already set is respected: a PREFECT_HOME of the user's stays in use. The
    default home is `$BATCHBRIDGE_VAR_DIR/prefect` (else ./var/prefect in the current
    folder), created by `ensure_prefect_home` when a command uses Prefect. Being
    environment variables, these defaults outrank the same settings in a Prefect
    profile; the temporary server's start limit is set by `prefect_api()` instead, as a
    default that a profile or the environment overrides.
    """
    os.environ.update(prefect_defaults(os.environ))


def ensure_prefect_home() -> Path:
    """Create the Prefect home before Prefect first loads (it makes only the last folder).

    Called by the commands that use Prefect, not at start-up: `--version` or a steward
    listing must not leave a var/prefect folder behind in whatever folder it ran from.
    """
    home = prefect_home()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home


def prefect_home() -> Path:
    """The Prefect home this process uses (Prefect's own default when none is set)."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


class TerminalLogHandler(logging.Handler):
    """Prefect's console handler without tracebacks: the CLI prints each error's reason.

    Prefect builds it from logging.yml (see TERMINAL_LOGGING_DEFAULTS); the API handler
    still receives every record whole, so the Prefect UI keeps the tracebacks. It wraps
    Prefect's handler rather than subclassing it: a subclass would import Prefect when
    this module loads, and every command loads it.
    """

    def __init__(
        self,
        stream: Any = None,
        styles: dict[str, str] | None = None,
        level: int | str = logging.NOTSET,
    ) -> None:
        # Loaded by Prefect's own logging setup, so Prefect is being imported already.
        from prefect.logging.handlers import PrefectConsoleHandler

        super().__init__(level)
        self.prefect_handler = PrefectConsoleHandler(stream=stream, styles=styles)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        super().setFormatter(fmt)
        self.prefect_handler.setFormatter(fmt)

    def emit(self, record: logging.LogRecord) -> None:
        # A copy: the same record goes on to the API handler with its traceback.
        shown = copy.copy(record)
        shown.exc_info = None
        shown.exc_text = None
        shown.stack_info = None
        self.prefect_handler.emit(shown)

    def flush(self) -> None:
        self.prefect_handler.flush()


def without_credentials(url: str) -> str:
    """`url` fit to print: no user, password, query or fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def api_problem(
    api_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    timeout: float = HEALTH_TIMEOUT_SECONDS,
) -> str | None:
    """Why the Prefect API at `api_url` does not answer GET /health, or None when it does."""
    # httpx (~60 ms) loads only for commands that talk to Prefect, not for every command.
    import httpx

    try:
        response = httpx.get(
            f"{api_url.rstrip('/')}/health",
            headers=dict(headers or {}),
            verify=verify,
            timeout=timeout,
            follow_redirects=True,
        )
    except httpx.HTTPError as exc:
        # The class name only: some messages quote the URL, with its credentials.
        return f"no answer ({type(exc).__name__})"
    if response.status_code != httpx.codes.OK:
        return f"GET /health answered HTTP {response.status_code}"
    return None


def _client_options(settings: Settings) -> tuple[dict[str, str], ssl.SSLContext | bool]:
    """Auth header and TLS check as Prefect's client builds them (client/orchestration)."""
    headers: dict[str, str] = {}
    if settings.api.auth_string is not None:
        import base64

        token = base64.b64encode(settings.api.auth_string.get_secret_value().encode())
        headers["Authorization"] = f"Basic {token.decode()}"
    elif settings.api.key is not None:
        headers["Authorization"] = f"Bearer {settings.api.key.get_secret_value()}"
    if settings.api.tls_insecure_skip_verify:
        return headers, False
    if settings.api.ssl_cert_file:
        return headers, ssl.create_default_context(cafile=settings.api.ssl_cert_file)
    return headers, True


def _is_api_failure(exc: BaseException) -> bool:
    """Whether an error escaping a flow call is Prefect failing to start or reach its API.

    Prefect raises plain RuntimeErrors for both (server/api/server.py SubprocessASGIServer
    .start, client/orchestration raise_for_api_version_mismatch): only the text tells.
    A connection error counts when Prefect's client raised it, not a task's own request.
    """
    import httpx  # loaded already: the flow call that raised went through Prefect's client

    if isinstance(exc, RuntimeError):
        text = str(exc)
        return "Failed to reach API" in text or "ephemeral Prefect API server" in text
    if isinstance(exc, httpx.TransportError):
        client_dir = f"{os.sep}prefect{os.sep}client{os.sep}"
        frame = exc.__traceback__
        while frame is not None:
            if client_dir in frame.tb_frame.f_code.co_filename:
                return True
            frame = frame.tb_next
    return False


def _start_temporary_server(limit: int) -> None:
    """Start Prefect's temporary server now, so its failure has a name and a limit."""
    # The server's module loads FastAPI and the database layer: only when it is used.
    from prefect.server.api.server import SubprocessASGIServer

    # Prefect's client asks for the same instance (port None) and finds it running.
    server = SubprocessASGIServer()
    if server.running:
        return
    if sys.stderr.isatty():
        note(TEMPORARY_SERVER_NOTE)
    try:
        server.start(timeout=limit)
    except Exception:
        process = server.server_process
        exited = process is not None and process.poll() is not None
        server.stop()
        what = (
            f"exited with status {process.returncode} before answering"
            if exited and process is not None
            else f"did not answer within {limit} s"
        )
        raise OrchestratorError(
            f"the temporary Prefect server {what}; run `batchbridge server start` to keep "
            f"one running, or raise the limit with {STARTUP_TIMEOUT_ENV}"
        ) from None


@contextmanager
def _pointed_at(api_url: str) -> Iterator[None]:
    """PREFECT_API_URL set to `api_url` for this block, restored afterwards."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Prefect read the environment at import: its settings context is what it consults;
    # the variable is for processes started from here.
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


@contextmanager
def prefect_api() -> Iterator[None]:
    """A Prefect API for the flows run inside this block, or OrchestratorError (exit 13).

    In order: the API URL the user configured (environment or active profile), checked
    first; the server `batchbridge server start` runs; Prefect's temporary server.
    """
    ensure_prefect_home()
    from prefect.context import get_settings_context
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as LIMIT
    from prefect.settings import temporary_settings

    with ExitStack() as stack:
        # A default only: a limit set in the environment or profile wins.
        settings = stack.enter_context(
            temporary_settings(set_defaults={LIMIT: DEFAULT_STARTUP_TIMEOUT_SECONDS})
        )
        configured = settings.api.url
        local = None if configured else find_local_server(prefect_home())
        if configured:
            shown = without_credentials(configured)
            headers, verify = _client_options(settings)
            problem = api_problem(configured, headers=headers, verify=verify)
            if problem is not None:
                source = (
                    "PREFECT_API_URL"
                    if os.environ.get("PREFECT_API_URL")
                    else f"Prefect profile {get_settings_context().profile.name!r}"
                )
                raise OrchestratorError(
                    f"the Prefect API at {shown} (from {source}) is not usable: {problem}; "
                    "start that server, or unset PREFECT_API_URL there to use a local one"
                )
            which = f"the Prefect API at {shown}"
        elif local is not None:
            problem = api_problem(local.api_url)
            if problem is not None:
                # Not a silent temporary server beside it: both would share one database.
                raise OrchestratorError(
                    f"the local Prefect server (pid {local.pid}) at {local.api_url} is not "
                    f"usable: {problem}; see {local.log_path}, or `batchbridge server stop`"
                )
            stack.enter_context(_pointed_at(local.api_url))
            which = f"the local Prefect server at {local.api_url}"
        elif settings.server.ephemeral.enabled:
            _start_temporary_server(settings.server.ephemeral.startup_timeout_seconds)
            which = "the temporary Prefect server"
        else:
            raise OrchestratorError(
                "no Prefect API: PREFECT_API_URL is not set and the temporary server is "
                "disabled; run `batchbridge server start`, or set PREFECT_API_URL"
            )
        try:
            yield
        except Exception as exc:
            if not _is_api_failure(exc):
                raise
            raise OrchestratorError(
                f"lost {which} during the run ({type(exc).__name__}); run the feed again "
                "once it answers (a rerun loads nothing twice)"
            ) from None
