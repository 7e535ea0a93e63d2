"""Start a throwaway PostgreSQL cluster on 127.0.0.1 for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.lifecycle import StopsOnExit

__all__ = [
    "PostgresNotFoundError",
    "PostgresServer",
    "PostgresStartError",
    "find_postgres_bindir",
    "start_postgres",
]

BINDIR_ENV = "BATCHBRIDGE_PG_BINDIR"
"""Folder holding initdb/pg_ctl/postgres; overrides the PATH and /usr/lib/postgresql search."""

SERVER_OS_USER = "postgres"
"""PostgreSQL refuses to run as root, so as root the cluster runs as this OS user."""

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# A Unix socket path must fit in sun_path (108 bytes); keep well below it.
_MAX_SOCKET_DIR = 80


class PostgresNotFoundError(RuntimeError):
    """Raised when no initdb/pg_ctl binaries can be found on this machine."""


class PostgresStartError(RuntimeError):
    """Raised when initdb or the server fails; the message carries the server log's tail."""


def find_postgres_bindir() -> Path:
    """Folder of the PostgreSQL server binaries: $BATCHBRIDGE_PG_BINDIR, PATH, or the newest
    /usr/lib/postgresql/<version>/bin."""
    override = os.environ.get(BINDIR_ENV)
    if override:
        bindir = Path(override)
        if not _has_server_binaries(bindir):
            raise PostgresNotFoundError(f"${BINDIR_ENV}={bindir} holds no initdb and pg_ctl")
        return bindir
    on_path = shutil.which("initdb")
    if on_path is not None:
        # Debian puts symlinks in /usr/local/bin or /usr/bin; pg_ctl and postgres live
        # beside the real initdb, so follow the link to get one consistent version.
        bindir = Path(on_path).resolve().parent
        if _has_server_binaries(bindir):
            return bindir
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _has_server_binaries(p)]
    if candidates:
        return max(candidates, key=lambda p: _version_key(p.parent.name))
    raise PostgresNotFoundError(
        "PostgreSQL server binaries not found: install the 'postgresql' package "
        f"(initdb and pg_ctl on PATH or under /usr/lib/postgresql/*/bin) or set ${BINDIR_ENV}"
    )


def _has_server_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _traversable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """True when `user` can reach `path`: every existing ancestor grants it search (x)."""
    groups = {user.pw_gid, *(g for g in os.getgrouplist(user.pw_name, user.pw_gid))}
    for folder in [path, *path.parents]:
        if not folder.exists():
            continue
        st = folder.stat()
        if st.st_uid == user.pw_uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return False
    return True


@dataclass
class PostgresServer(StopsOnExit):
    """A running test cluster; `stop()` kills it and deletes its files."""

    bindir: Path
    root: Path
    port: int
    run_as: str | None
    host: str = "127.0.0.1"
    user: str = "postgres"
    _finalizer: weakref.finalize[..., PostgresServer] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        """The cluster's PGDATA."""
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        """Folder of the Unix socket (kept short: socket paths are limited to ~107 bytes)."""
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        """The server log; its tail is quoted when the server fails to start."""
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the `postgres` database."""
        return self.url_for("postgres")

    @property
    def dsn(self) -> str:
        """libpq connection string (for psycopg.connect) of the `postgres` database."""
        return self.dsn_for("postgres")

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy URL of `dbname` on this server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def dsn_for(self, dbname: str) -> str:
        """libpq URI of `dbname` on this server."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create database `name` and return its SQLAlchemy URL."""
        self._check_db_name(name)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, disconnecting its sessions first."""
        self._check_db_name(name)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def is_running(self) -> bool:
        """True while the postmaster answers pg_ctl status."""
        result = _run(self, ["pg_ctl", "-D", str(self.data_dir), "status"], check=False)
        return result.returncode == 0

    def start(self) -> None:
        """Start the server on its port (again); waits until it accepts connections."""
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-k {shlex.quote(str(self.socket_dir))}",
                # Test speed only: a crash may lose or corrupt data, which a throwaway
                # cluster can afford. Never use these settings for a real warehouse.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        result = _run(
            self,
            [
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            check=False,
        )
        if result.returncode != 0:
            raise PostgresStartError(
                f"pg_ctl start failed (exit {result.returncode}) on port {self.port}:\n"
                f"{result.stdout}{result.stderr}\n--- server log ---\n{self._log_tail()}"
            )

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the postmaster but keep the cluster (see `restart`); `mode` as pg_ctl -m
        ("immediate" stands in for a crash in fault tests)."""
        _run(self, ["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop"])

    def restart(self) -> None:
        """Stop (fast) and start again on the same port: existing connections break."""
        self.stop_server("fast")
        self.start()

    def stop(self) -> None:
        """Stop the server (fast, else immediate, else SIGKILL) and delete its files."""
        if self._finalizer is not None:
            self._finalizer()

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def _check_db_name(name: str) -> None:
        if not _DB_NAME.match(name):
            raise ValueError(f"database name {name!r} must match {_DB_NAME.pattern}")


def _command(bindir: Path, run_as: str | None, args: list[str]) -> list[str]:
    argv = [str(bindir / args[0]), *args[1:]]
    if run_as is None:
        return argv
    return ["runuser", "-u", run_as, "--", *argv]


def _run(
    server: PostgresServer, args: list[str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return _run_raw(server.bindir, server.run_as, server.root, args, check=check)


def _run_raw(
    bindir: Path, run_as: str | None, cwd: Path, args: list[str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        _command(bindir, run_as, args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise PostgresStartError(
            f"{args[0]} {args[-1]} failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


def _shutdown(bindir: Path, run_as: str | None, root: Path) -> None:
    """Stop the postmaster whatever state it is in, then delete the cluster's files."""
    data_dir = root / "data"
    if (data_dir / "postmaster.pid").exists():
        for mode in ("fast", "immediate"):
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                result = _run_raw(
                    bindir,
                    run_as,
                    root,
                    ["pg_ctl", "-D", str(data_dir), "-m", mode, "-w", "-t", "20", "stop"],
                    check=False,
                )
                if result.returncode == 0:
                    break
        else:
            _kill_postmaster(data_dir)
    shutil.rmtree(root, ignore_errors=True)


def _kill_postmaster(data_dir: Path) -> None:
    # Last resort when pg_ctl cannot stop it: SIGKILL the postmaster by its pid file.
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)


def _choose_root(workdir: Path, run_as: pwd.struct_passwd | None) -> Path:
    """A new folder for the cluster (deleted again on stop).

    The server's OS user must be able to reach the data dir, and the socket path must
    be short; pytest's tmp dirs under /tmp/pytest-of-root are 0700, so as root the
    cluster usually lands in a fresh folder under the system temp dir instead.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    preferred = workdir / "postgres"
    usable = len(str(preferred / "sock")) <= _MAX_SOCKET_DIR and (
        run_as is None or _traversable_by(workdir, run_as)
    )
    if usable and not preferred.exists():
        preferred.mkdir(mode=0o700)
        return preferred
    base = Path(tempfile.gettempdir())
    if run_as is not None and not _traversable_by(base, run_as):
        raise PostgresStartError(
            f"neither {workdir} nor {base} is reachable by OS user {run_as.pw_name!r}; "
            "set TMPDIR to a folder every user can traverse (like /tmp)"
        )
    return Path(tempfile.mkdtemp(prefix="batchbridge-pg-", dir=base))


def start_postgres(workdir: Path, *, port: int | None = None) -> PostgresServer:
    """initdb a fresh cluster and start it on 127.0.0.1 (trust auth, user `postgres`).

    As root, initdb and the server run as the `postgres` OS user (PostgreSQL refuses
    root). The server is stopped and its files deleted by `stop()`, or at interpreter
    exit if a test crashed before stopping it.
    """
    bindir = find_postgres_bindir()
    run_as_user: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            run_as_user = pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            raise PostgresStartError(
                f"running as root needs an OS user {SERVER_OS_USER!r} to run PostgreSQL as"
            ) from None
        if shutil.which("runuser") is None:
            raise PostgresStartError("running as root needs `runuser` (util-linux)")
    root = _choose_root(workdir, run_as_user)
    run_as = run_as_user.pw_name if run_as_user is not None else None
    (root / "sock").mkdir(mode=0o700, exist_ok=True)
    if run_as_user is not None:
        for path in (root, root / "sock"):
            os.chown(path, run_as_user.pw_uid, run_as_user.pw_gid)

    server = PostgresServer(bindir=bindir, root=root, port=port or _free_port(), run_as=run_as)
    # Registered before anything starts so a crash midway still cleans up at exit.
    server._finalizer = weakref.finalize(server, _shutdown, bindir, run_as, root)
    try:
        _run(
            server,
            [
                "initdb",
                "-D",
                str(server.data_dir),
                "--auth=trust",
                "-U",
                server.user,
                "--encoding=UTF8",
                "--locale=C",
                # Test speed: skip fsync of the new cluster's files.
                "--no-sync",
            ],
        )
        for attempt in range(3):
            try:
                server.start()
                break
            except PostgresStartError:
                # The free port may have been taken between probing and binding.
                if attempt == 2 or port is not None:
                    raise
                server.port = _free_port()
    except BaseException:
        server.stop()
        raise
    return server
