"""`batchbridge server start|stop|status`: a local Prefect server that CLI flow runs reuse.

Without one, every command that runs a flow starts (and stops) Prefect's temporary server
first. The server runs `python -m prefect server start` in its own process group, with
the project's Prefect home; its pid, port and log are recorded in that home
(`batchbridge-server.json`), which is how `batchbridge run` finds it. Prefect itself is
not imported here: `server status` must answer at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from batchbridge.cli.output import note, print_json
from batchbridge.cli.params import JsonOption
from batchbridge.cli.prefect_env import (
    TERMINAL_LOGGING_DEFAULTS,
    LocalServer,
    api_problem,
    find_local_server,
    prefect_home,
    process_group_alive,
    remove_local_server,
    state_path,
    write_local_server,
)
from batchbridge.errors import OrchestratorError

HOST = "127.0.0.1"
DEFAULT_PORT = 4200
"""Prefect's usual port, taken when free; otherwise the system picks a free one."""

NOT_RUNNING_EXIT = OrchestratorError.exit_code
"""`server status` when no server runs: no local Prefect API to reach (the tree's 13)."""

NOT_ANSWERING_EXIT = OrchestratorError.exit_code
"""`server status` when the server's process runs but its API does not answer."""

LOG_TAIL_LINES = 8

app = typer.Typer(
    help=(
        "A local Prefect server (with its UI) that `batchbridge run` and `demo` reuse, "
        "instead of starting a temporary one for every command. Its database, log and "
        "state live in the Prefect home ($PREFECT_HOME, default ./var/prefect)."
    ),
    no_args_is_help=True,
)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as log:
            return [line.rstrip() for line in deque(log, maxlen=lines) if line.strip()]
    except OSError:
        return []


def server_environment(home: Path) -> dict[str, str]:
    """The server's environment: this one, with the project's home and a quiet full log."""
    env = dict(os.environ)
    # The terminal's console handler (no tracebacks, warnings only) is not for a log file
    # someone reads to find out why the server failed.
    for key, value in TERMINAL_LOGGING_DEFAULTS.items():
        if env.get(key) == value:
            del env[key]
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    # One INFO line per API request would fill the log overnight.
    env.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    return env


def _start_process(home: Path, port: int, log_path: Path) -> LocalServer:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                HOST,
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_environment(home),
            cwd=home,
            # Its own session: a Ctrl-C in this terminal does not stop it; `stop` ends
            # the whole group.
            start_new_session=True,
        )
    return LocalServer(
        pid=process.pid,
        port=port,
        api_url=f"http://{HOST}:{port}/api",
        log_path=str(log_path),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _wait_until_answering(server: LocalServer, timeout: float) -> str | None:
    """Poll /api/health until it answers (progress on a terminal); else what went wrong."""
    show_progress = sys.stderr.isatty()
    started = time.monotonic()
    failure: str | None = f"did not answer within {timeout:.0f} s"
    while (elapsed := time.monotonic() - started) < timeout:
        if not process_group_alive(server.pid):
            failure = "exited before answering"
            break
        if api_problem(server.api_url, timeout=2.0) is None:
            failure = None
            break
        if show_progress:
            sys.stderr.write(f"\rwaiting for the Prefect server to answer: {elapsed:.0f} s")
            sys.stderr.flush()
        time.sleep(0.5)
    if show_progress:
        sys.stderr.write("\n")
    return failure


def signal_group(pid: int, signum: signal.Signals) -> None:
    """Send `signum` to the process group `pid` leads (gone already: nothing to do)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def stop_server(server: LocalServer, *, timeout: float) -> bool:
    """SIGTERM the server's process group, SIGKILL after `timeout`; True if it had to."""
    signal_group(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_group_alive(server.pid):
            return False
        time.sleep(0.2)
    signal_group(server.pid, signal.SIGKILL)
    return True


@app.command("start")
def start_command(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            help=f"Port on {HOST} (default: {DEFAULT_PORT} when free, else any free port).",
            min=1,
            max=65535,
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Seconds to wait for the API (the first start migrates its database).",
            min=1,
        ),
    ] = 180.0,
) -> int:
    """Start a Prefect server in the background and wait until its API answers."""
    home = prefect_home()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    running = find_local_server(home)
    if running is not None:
        print(f"Prefect server already running: {running.api_url} (pid {running.pid})")
        return 0
    if port is None:
        port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else _free_port()
    server = _start_process(home, port, home / "server.log")
    write_local_server(home, server)
    failure = _wait_until_answering(server, timeout)
    if failure is not None:
        stop_server(server, timeout=10.0)
        remove_local_server(home)
        tail = "\n".join(_log_tail(Path(server.log_path)))
        raise OrchestratorError(
            f"the Prefect server {failure} (--timeout raises the limit); its log: "
            f"{server.log_path}" + (f"\nlast lines of the log:\n{tail}" if tail else "")
        )
    print(f"Prefect server running: API {server.api_url}, UI {server.ui_url} (pid {server.pid})")
    print(f"log {server.log_path}; `batchbridge server stop` stops it")
    if os.environ.get("PREFECT_API_URL"):
        note("note: PREFECT_API_URL is set: flow runs from this shell use that API, not this one")
    return 0


@app.command("stop")
def stop_command(
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Seconds to wait after SIGTERM before SIGKILL.", min=0),
    ] = 20.0,
) -> int:
    """Stop the server `batchbridge server start` started (exit 0 if none was running)."""
    home = prefect_home()
    server = find_local_server(home)
    if server is None:
        print("no Prefect server running")
        return 0
    killed = stop_server(server, timeout=timeout)
    remove_local_server(home)
    print(f"Prefect server stopped (pid {server.pid}{', killed' if killed else ''})")
    return 0


@app.command(
    "status",
    help=(
        "Whether the local Prefect server runs and answers. Exit 0: running and answering; "
        f"{NOT_RUNNING_EXIT}: not running, or running but its API not answering."
    ),
)
def status_command(as_json: JsonOption = False) -> int:
    """Whether the local Prefect server runs and answers (exit 0; 13 when not usable)."""
    home = prefect_home()
    server = find_local_server(home)
    healthy = server is not None and api_problem(server.api_url) is None
    if as_json:
        found = {"running": server is not None, "healthy": healthy, "state": str(state_path(home))}
        if server is not None:
            found |= {"pid": server.pid, "api_url": server.api_url, "log": server.log_path}
        print_json(found)
    elif server is None:
        print("Prefect server: not running")
    else:
        print(f"Prefect server: running, {'answering' if healthy else 'NOT answering'}")
        print(f"  api  {server.api_url}\n  ui   {server.ui_url}\n  pid  {server.pid}")
        print(f"  log  {server.log_path}\n  since {server.started_at}")
    if server is None:
        return NOT_RUNNING_EXIT
    return 0 if healthy else NOT_ANSWERING_EXIT
