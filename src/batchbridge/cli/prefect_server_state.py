"""The state file of `batchbridge server start`: which local Prefect server runs, if any.

Kept in the Prefect home (`batchbridge-server.json`), written atomically, read by every
command that runs a flow; a record whose process is gone is removed on sight. Nothing
here imports Prefect: `server status` must answer at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE_NAME = "batchbridge-server.json"


@dataclass(frozen=True)
class LocalServer:
    """A Prefect server started by `batchbridge server start`, as its state file records it."""

    pid: int
    port: int
    api_url: str
    log_path: str
    started_at: str

    @property
    def ui_url(self) -> str:
        """The Prefect UI's address (the API is under /api)."""
        return self.api_url.removesuffix("/api")


def state_path(home: Path) -> Path:
    """Where `batchbridge server start` records the server it started."""
    return home / STATE_FILE_NAME


def write_local_server(home: Path, server: LocalServer) -> None:
    """Record a started server (atomically: a reader never sees half a file)."""
    path = state_path(home)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(asdict(server), indent=2) + "\n", encoding="utf-8")
    partial.chmod(0o600)
    partial.replace(path)


def remove_local_server(home: Path) -> None:
    """Forget the recorded server."""
    state_path(home).unlink(missing_ok=True)


def read_local_server(home: Path) -> LocalServer | None:
    """The recorded server, or None when there is no record (or an unreadable one)."""
    try:
        data = json.loads(state_path(home).read_text(encoding="utf-8"))
        return LocalServer(
            pid=int(data["pid"]),
            port=int(data["port"]),
            api_url=str(data["api_url"]),
            log_path=str(data["log_path"]),
            started_at=str(data["started_at"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        remove_local_server(home)  # half-written or hand-edited: as good as no server
        return None


def process_group_alive(pid: int) -> bool:
    """Whether `pid` is alive and still leads its own process group, as our server does.

    A pid reused by an unrelated process is (almost always) not a group leader; one of
    another user cannot be signalled: both count as gone. A zombie counts as gone.
    """
    try:
        os.kill(pid, 0)
        if os.getpgid(pid) != pid:
            return False
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return True  # no /proc (macOS): signal 0 is all we can know
    return stat.rpartition(")")[2].split()[0] != "Z"


def find_local_server(home: Path) -> LocalServer | None:
    """The recorded server if its process is alive; a stale record is removed."""
    server = read_local_server(home)
    if server is not None and not process_group_alive(server.pid):
        remove_local_server(home)
        return None
    return server
