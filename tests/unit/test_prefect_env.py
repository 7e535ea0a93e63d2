"""Which Prefect API a CLI flow run gets, the defaults behind it, and the server state file."""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock

import httpx
import pytest
from prefect.client.base import PrefectHttpxSyncClient
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)

from batchbridge.cli import prefect_env
from batchbridge.cli.app import main
from batchbridge.cli.output import error_line
from batchbridge.cli.prefect_env import (
    TERMINAL_HANDLER,
    LocalServer,
    TerminalLogHandler,
    api_problem,
    ensure_prefect_home,
    find_local_server,
    prefect_api,
    prefect_defaults,
    read_local_server,
    set_prefect_defaults,
    state_path,
    without_credentials,
    write_local_server,
)
from batchbridge.cli.server import server_environment
from batchbridge.errors import OrchestratorError


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(status: int) -> Iterator[str]:
    handler = type("Health", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def healthy_api() -> Iterator[str]:
    """An API URL whose /health answers 200."""
    yield from _serve(200)


@pytest.fixture
def failing_api() -> Iterator[str]:
    """An API URL whose /health answers 503."""
    yield from _serve(503)


@pytest.fixture
def closed_url() -> str:
    """An API URL on a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://user:s3cret@127.0.0.1:{port}/api?token=abc"


@pytest.fixture
def group_leader() -> Iterator[int]:
    """A live process leading its own process group, as `server start` makes one."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Prefect home of our own, with no API URL configured (the harness may set one)."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path


@pytest.fixture
def no_configured_api() -> Iterator[None]:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


def _local(pid: int, api_url: str, home: Path) -> LocalServer:
    return LocalServer(
        pid=pid,
        port=int(api_url.rsplit(":", 1)[1].split("/")[0]),
        api_url=api_url,
        log_path=str(home / "server.log"),
        started_at="2026-01-01T00:00:00+00:00",
    )


def test_defaults_put_prefect_home_under_the_var_dir(tmp_path: Path) -> None:
    chosen = prefect_defaults({"BATCHBRIDGE_VAR_DIR": str(tmp_path / "var")})
    assert chosen["PREFECT_HOME"] == str((tmp_path / "var" / "prefect").resolve())
    assert chosen["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert chosen["PREFECT_LOGGING_EXTRA_LOGGERS"] == "batchbridge"
    assert chosen["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] == "ignore"
    assert chosen["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] == "CRITICAL"
    assert chosen["PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS"] == TERMINAL_HANDLER


def test_defaults_without_var_dir_use_dot_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert prefect_defaults({})["PREFECT_HOME"] == str(tmp_path.resolve() / "var" / "prefect")


def test_defaults_respect_what_is_set() -> None:
    chosen = prefect_defaults(
        {"PREFECT_HOME": "/elsewhere", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO"}
    )
    assert "PREFECT_HOME" not in chosen
    assert "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL" not in chosen


def test_debug_keeps_prefects_own_console() -> None:
    chosen = prefect_defaults({"BATCHBRIDGE_DEBUG": "1"})
    assert "PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS" not in chosen
    assert "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL" not in chosen


def test_set_defaults_names_the_home_and_flow_commands_create_it(tmp_path: Path) -> None:
    with mock.patch.dict(os.environ, {"BATCHBRIDGE_VAR_DIR": str(tmp_path / "v")}):
        del os.environ["PREFECT_HOME"]
        set_prefect_defaults()
        assert os.environ["PREFECT_HOME"] == str(tmp_path / "v" / "prefect")
        assert not (tmp_path / "v").exists()  # a command without Prefect leaves nothing
        assert ensure_prefect_home() == tmp_path / "v" / "prefect"
        assert (tmp_path / "v" / "prefect").is_dir()


def test_set_defaults_respects_a_set_home(tmp_path: Path) -> None:
    with mock.patch.dict(os.environ, {"PREFECT_HOME": str(tmp_path / "mine")}):
        set_prefect_defaults()
        assert os.environ["PREFECT_HOME"] == str(tmp_path / "mine")
    assert not (tmp_path / "mine").exists()  # Prefect creates a home it is given


def test_state_file_round_trip(home: Path, group_leader: int) -> None:
    server = _local(group_leader, "http://127.0.0.1:4200/api", home)
    write_local_server(home, server)
    assert read_local_server(home) == server
    assert find_local_server(home) == server
    assert state_path(home).stat().st_mode & 0o777 == 0o600
    assert server.ui_url == "http://127.0.0.1:4200"


def test_no_state_file_no_server(home: Path) -> None:
    assert find_local_server(home) is None


def test_unreadable_state_file_is_removed(home: Path) -> None:
    state_path(home).write_text("{half", encoding="utf-8")
    assert read_local_server(home) is None
    assert not state_path(home).exists()


def test_stale_state_file_is_removed(home: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    write_local_server(home, _local(int(finished.stdout), "http://127.0.0.1:4200/api", home))
    assert find_local_server(home) is None
    assert not state_path(home).exists()


def test_a_reused_pid_that_leads_no_group_is_not_our_server(home: Path) -> None:
    # Started without a session of its own: alive, but not the group leader we record.
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_local_server(home, _local(process.pid, "http://127.0.0.1:4200/api", home))
        assert find_local_server(home) is None
    finally:
        process.kill()
        process.wait()


def test_credentials_never_printed() -> None:
    assert (
        without_credentials("https://me:pw@prefect.example.org:4443/api?key=k#x")
        == "https://prefect.example.org:4443/api"
    )


def test_api_problem(healthy_api: str, failing_api: str, closed_url: str) -> None:
    assert api_problem(healthy_api) is None
    assert api_problem(failing_api) == "GET /health answered HTTP 503"
    assert api_problem(closed_url) == "no answer (ConnectError)"


def test_configured_unreachable_api_is_one_line_without_credentials(closed_url: str) -> None:
    with (
        temporary_settings(updates={PREFECT_API_URL: closed_url}),
        pytest.raises(OrchestratorError) as raised,
        prefect_api(),
    ):
        pytest.fail("the block must not run")
    line = error_line(raised.value)
    assert "\n" not in line
    assert line.startswith("error [prefect_unavailable]: the Prefect API at http://127.0.0.1:")
    assert "s3cret" not in line and "token" not in line and "user" not in line
    assert raised.value.exit_code == 13


def test_configured_answering_api_is_used_as_is(healthy_api: str, home: Path) -> None:
    with temporary_settings(updates={PREFECT_API_URL: healthy_api}), prefect_api():
        assert PREFECT_API_URL.value() == healthy_api


def test_running_local_server_is_used_and_restored(
    home: Path, no_configured_api: None, healthy_api: str, group_leader: int
) -> None:
    write_local_server(home, _local(group_leader, healthy_api, home))
    with prefect_api():
        assert PREFECT_API_URL.value() == healthy_api
        assert os.environ["PREFECT_API_URL"] == healthy_api
    assert PREFECT_API_URL.value() is None
    assert "PREFECT_API_URL" not in os.environ


def test_silent_local_server_is_an_error_naming_its_log(
    home: Path, no_configured_api: None, failing_api: str, group_leader: int
) -> None:
    write_local_server(home, _local(group_leader, failing_api, home))
    with pytest.raises(OrchestratorError, match=r"server\.log"), prefect_api():
        pytest.fail("the block must not run")


def test_temporary_server_limit_is_a_default(
    home: Path, no_configured_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits: list[int] = []
    monkeypatch.setattr(prefect_env, "_start_temporary_server", limits.append)
    with prefect_api():
        pass
    with (
        temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 33}),
        prefect_api(),
    ):
        pass
    assert limits == [180, 33]


def test_no_api_at_all(home: Path, no_configured_api: None) -> None:
    with (
        temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_ENABLED: False}),
        pytest.raises(OrchestratorError, match="batchbridge server start"),
        prefect_api(),
    ):
        pytest.fail("the block must not run")


def test_api_failure_inside_the_flow_call_becomes_one_line(
    home: Path, no_configured_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefect_env, "_start_temporary_server", lambda limit: None)
    with pytest.raises(OrchestratorError) as raised, prefect_api():
        raise RuntimeError("Failed to reach API at http://127.0.0.1:9/api")
    assert "\n" not in error_line(raised.value)
    with pytest.raises(RuntimeError, match="unrelated"), prefect_api():
        raise RuntimeError("unrelated")


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_connection_lost_by_prefects_client_is_one_line(
    home: Path, no_configured_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefect_env, "_start_temporary_server", lambda limit: None)
    client = PrefectHttpxSyncClient(
        base_url="http://127.0.0.1:9/api", transport=httpx.MockTransport(_refused)
    )
    with pytest.raises(OrchestratorError, match="lost the temporary"), prefect_api():
        client.get("/health")


def test_a_tasks_own_connection_error_is_not_prefects(
    home: Path, no_configured_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefect_env, "_start_temporary_server", lambda limit: None)
    client = httpx.Client(transport=httpx.MockTransport(_refused))
    with pytest.raises(httpx.ConnectError), prefect_api():
        client.get("http://partner.example.org/fhir")


def test_terminal_handler_drops_the_traceback_but_not_from_the_record() -> None:
    stream = io.StringIO()
    handler = TerminalLogHandler(stream=stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    handler.handle(record)
    assert stream.getvalue().strip() == "ERROR failed"
    assert record.exc_info is not None and record.exc_text is None


def test_server_environment_keeps_the_log_whole(tmp_path: Path) -> None:
    with mock.patch.dict(
        os.environ,
        {
            "PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS": TERMINAL_HANDLER,
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
        },
    ):
        env = server_environment(tmp_path)
    assert "PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS" not in env
    assert env["PREFECT_HOME"] == str(tmp_path)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_status_without_server_exits_13(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with mock.patch.dict(os.environ):  # main() sets Prefect defaults in the environment
        assert main(["server", "status"]) == 13
        assert main(["server", "stop"]) == 0
    assert "not running" in capsys.readouterr().out
