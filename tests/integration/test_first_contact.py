"""First contact (issue 10): the CLI on a machine that has never run Prefect, as a person would.

Every command runs in a subprocess with an empty HOME and an empty Prefect home, and no
PREFECT_* or BATCHBRIDGE_* setting inherited: what a fresh checkout sees.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import paramiko
import pytest

from batchbridge.cli.prefect_env import read_local_server
from batchbridge.demo.sftp_server import EmbeddedSftpServer

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT_SECONDS = 600  # a first start on a loaded 2-core machine is slow


class Machine:
    """An empty HOME and Prefect home, and the `batchbridge` command run against them."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.prefect_home = root / "prefect-home"
        self.home.mkdir()
        self.prefect_home.mkdir()
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PREFECT_", "BATCHBRIDGE_"))
        }
        self.env |= {"HOME": str(self.home), "PREFECT_HOME": str(self.prefect_home)}

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """`batchbridge ARGS`, its output captured (stderr is not a terminal)."""
        return subprocess.run(
            [sys.executable, "-m", "batchbridge.cli", *args],
            env=self.env | extra_env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


@pytest.fixture
def server_machine(machine: Machine) -> Iterator[Machine]:
    """A machine on which `batchbridge server start` ran; stopped whatever happens."""
    started = machine.run("server", "start")
    try:
        assert started.returncode == 0, started.stderr
        yield machine
    finally:
        if machine.run("server", "stop").returncode != 0:
            server = read_local_server(machine.prefect_home)
            if server is not None:
                os.killpg(server.pid, signal.SIGKILL)


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout
    assert "Traceback" not in result.stderr


def _reconciled_lines(stdout: str) -> list[str]:
    """Report lines of a file that was reconciled and balances."""
    return [
        line
        for line in stdout.splitlines()
        if re.match(r"LAB_RESULTS_\S+\s+reconciled\*?\s", line) and line.rstrip().endswith("yes")
    ]


def _flow_run_count(api_url: str) -> int:
    response = httpx.post(f"{api_url}/flow_runs/count", json={}, timeout=10)
    response.raise_for_status()
    return int(response.json())


def test_demo_on_a_fresh_machine(machine: Machine, tmp_path: Path) -> None:
    result = machine.run("demo", "--workdir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert len(_reconciled_lines(result.stdout)) == 1, result.stdout
    _no_traceback(result)
    # The temporary server's database lives in the Prefect home it was given.
    assert (machine.prefect_home / "prefect.db").exists()


def test_server_round_trip(server_machine: Machine, tmp_path: Path) -> None:
    machine = server_machine
    status = machine.run("server", "status")
    assert status.returncode == 0, status.stdout
    assert "running, answering" in status.stdout
    server = read_local_server(machine.prefect_home)
    assert server is not None
    assert machine.run("server", "start").stdout.startswith("Prefect server already running")

    workdir = tmp_path / "demo"
    demo = machine.run("demo", "--workdir", str(workdir))
    assert demo.returncode == 0, demo.stderr
    _no_traceback(demo)
    runs_after_demo = _flow_run_count(server.api_url)
    assert runs_after_demo >= 2  # the demo's runs went to this server

    with _partner_served_again(workdir):
        rerun = machine.run(
            "run",
            "lab_results",
            "--config-dir",
            str(workdir / "feeds"),
            "--force",
            BATCHBRIDGE_DATABASE_URL=f"sqlite:///{workdir / 'ledger.db'}",
            BATCHBRIDGE_STAGING_DIR=str(workdir / "staging"),
        )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert len(_reconciled_lines(rerun.stdout)) == 1, rerun.stdout
    _no_traceback(rerun)
    assert _flow_run_count(server.api_url) == runs_after_demo + 1

    stopped = machine.run("server", "stop")
    assert stopped.returncode == 0
    assert machine.run("server", "status").returncode == 13
    assert read_local_server(machine.prefect_home) is None


def test_temporary_server_too_slow_is_one_line(machine: Machine, tmp_path: Path) -> None:
    result = machine.run(
        "demo",
        "--workdir",
        str(tmp_path / "demo"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1",
    )
    assert result.returncode == 13
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error [prefect_unavailable]: the temporary Prefect server")
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in result.stderr
    _no_traceback(result)


def test_server_that_does_not_come_up(machine: Machine) -> None:
    result = machine.run("server", "start", "--timeout", "1")
    assert result.returncode == 13
    assert result.stderr.startswith("error [prefect_unavailable]: the Prefect server did not")
    assert str(machine.prefect_home / "server.log") in result.stderr.splitlines()[0]
    _no_traceback(result)
    assert machine.run("server", "status").returncode == 13


@contextmanager
def _partner_served_again(workdir: Path) -> Iterator[None]:
    """The demo's partner SFTP folder served again, its feed YAML pointed at the new server.

    The demo's own SFTP server ends with the demo; this one has a new port and host key.
    """
    key_text = (workdir / "secrets" / "sftp_key").read_text(encoding="utf-8")
    client_key = paramiko.Ed25519Key.from_private_key(io.StringIO(key_text))
    authorized = f"{client_key.get_name()} {client_key.get_base64()}"
    with EmbeddedSftpServer(workdir / "partner-sftp", authorized) as server:
        feed = workdir / "feeds" / "lab_results.yaml"
        text = re.sub(r"(?m)^  port: \d+$", f"  port: {server.port}", feed.read_text())
        text = re.sub(r"(?m)^  - ssh-ed25519 \S+$", f"  - {server.host_key_line}", text)
        feed.write_text(text, encoding="utf-8")
        yield
