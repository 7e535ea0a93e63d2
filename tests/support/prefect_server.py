"""A real `prefect server start` and process workers on 127.0.0.1, for tests and scripts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.lifecycle import StopsOnExit

_START_TIMEOUT_SECONDS = 120.0
_STOP_TIMEOUT_SECONDS = 20.0
_PORT_ATTEMPTS = 3


class PrefectServerError(RuntimeError):
    """Raised when the Prefect server or a worker does not come up; quotes its log's tail."""


def prefect_command() -> list[str]:
    """The Prefect CLI of this interpreter (the venv's), whatever is first on PATH."""
    return [sys.executable, "-m", "prefect"]


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without PREFECT_* settings, plus `extra`.

    A child must not inherit the caller's Prefect profile, API URL or test-harness
    settings: it talks only to the server it is told about.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    # No telemetry from an air-gapped network (and no waiting on a blocked endpoint).
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.update(extra or {})
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group we started (the CLI and its children), then SIGKILL."""
    if process is None:
        return
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_TIMEOUT_SECONDS)
    # Children (uvicorn, flow-run processes) may outlive the leader: end the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class PrefectWorker(StopsOnExit):
    """A `prefect worker start --type process` subprocess polling one work pool."""

    name: str
    pool: str
    log_path: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        """Whether the worker process is alive."""
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the worker's log (flow-run output lands here too)."""
        return _tail(self.log_path, lines)

    def stop(self) -> None:
        """Stop the worker and the flow-run processes it started."""
        process, self._process = self._process, None
        _stop_group(process)


@dataclass
class PrefectServer(StopsOnExit):
    """A running `prefect server start`: its API URL, home folder and log."""

    home: Path
    host: str
    port: int
    database_url: str
    log_path: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _workers: list[PrefectWorker] = field(default_factory=list, repr=False)

    @property
    def api_url(self) -> str:
        """What clients set as PREFECT_API_URL."""
        return f"http://{self.host}:{self.port}/api"

    @property
    def workers(self) -> list[PrefectWorker]:
        """The workers started with `start_worker` (stopped with the server)."""
        return list(self._workers)

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def client_env(self) -> dict[str, str]:
        """Settings a client process (CLI, worker, flow run) needs to use this server."""
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the server's log."""
        return _tail(self.log_path, lines)

    def healthy(self) -> bool:
        """True when the API answers /health."""
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:  # noqa: S310 - our own loopback URL
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def start_worker(
        self,
        pool: str,
        *,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        limit: int | None = None,
        poll_seconds: float = 1.0,
        cwd: Path | None = None,
        timeout: float = 60.0,
    ) -> PrefectWorker:
        """Start a process worker on `pool` (created if missing) and wait until it polls.

        `env` reaches every flow run the worker starts (the process worker hands its own
        environment to them): that is where ledger, staging and secret settings go.
        """
        worker_name = name or f"worker-{len(self._workers) + 1}"
        log_path = self.home / f"{worker_name}.log"
        command = [
            *prefect_command(),
            "worker",
            "start",
            "--pool",
            pool,
            "--type",
            "process",
            "--name",
            worker_name,
            "--install-policy",
            "never",
        ]
        if limit is not None:
            command += ["--limit", str(limit)]
        worker_env = clean_environ(
            {
                **self.client_env(),
                # Poll often: the default 10 s would dominate a short test.
                "PREFECT_WORKER_QUERY_SECONDS": str(poll_seconds),
                "PREFECT_WORKER_PREFETCH_SECONDS": "0",
                "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
                **(env or {}),
            }
        )
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=worker_env,
                # Not the caller's folder: flow runs must find the code via the pull step.
                cwd=cwd or self.home,
                start_new_session=True,
            )
        worker = PrefectWorker(name=worker_name, pool=pool, log_path=log_path, _process=process)
        self._workers.append(worker)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PrefectServerError(
                    f"worker {worker_name} exited with status {process.returncode}:\n"
                    f"{worker.log_tail()}"
                )
            if worker_name in self.worker_names(pool):
                return worker
            time.sleep(0.3)
        worker.stop()
        raise PrefectServerError(
            f"worker {worker_name} did not register in {timeout:.0f} s:\n{worker.log_tail()}"
        )

    def worker_names(self, pool: str) -> set[str]:
        """Names of the workers that have sent a heartbeat for `pool`."""
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            f"{self.api_url}/work_pools/{pool}/workers/filter",
            data=b"{}",
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return {worker["name"] for worker in json.load(response)}
        except (OSError, urllib.error.URLError, ValueError):
            return set()

    def stop(self) -> None:
        """Stop every worker started here, then the server."""
        for worker in self._workers:
            worker.stop()
        self._workers.clear()
        process, self._process = self._process, None
        _stop_group(process)


def start_prefect_server(
    home: Path,
    *,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = _START_TIMEOUT_SECONDS,
) -> PrefectServer:
    """Start `prefect server start` on a free 127.0.0.1 port and wait for /api/health.

    `home` becomes PREFECT_HOME (profiles, logs, the SQLite database by default);
    `database_url` is an async SQLAlchemy URL, e.g. `postgresql+asyncpg://…` for
    production-like runs. No UI (nothing here looks at it) and no analytics.
    """
    home.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    log_path = home / "server.log"
    last_error = ""
    for _attempt in range(_PORT_ATTEMPTS):
        server = PrefectServer(
            home=home, host="127.0.0.1", port=_free_port(), database_url=url, log_path=log_path
        )
        server_env = clean_environ(
            {
                "PREFECT_HOME": str(home),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": url,
                "PREFECT_SERVER_UI_ENABLED": "false",
                "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
                **(env or {}),
            }
        )
        with log_path.open("ab") as log:
            server._process = subprocess.Popen(
                [
                    *prefect_command(),
                    "server",
                    "start",
                    "--host",
                    server.host,
                    "--port",
                    str(server.port),
                    "--no-ui",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=server_env,
                cwd=home,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not server.running:
                break
            if server.healthy():
                return server
            time.sleep(0.25)
        last_error = server.log_tail()
        server.stop()
        if "address already in use" not in last_error.lower():
            break  # not a port race: trying another port will not help
    raise PrefectServerError(f"Prefect server did not become healthy:\n{last_error}")
