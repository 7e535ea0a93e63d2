"""The GnuPG homes gpg runs in here: private, throwaway, only the keys given, agent stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batchbridge.connectors.pgp.status import StatusLine, parse_status

# gpg-agent re-protects an imported key with a hash count calibrated to ~100 ms of CPU,
# paid again on every use: 1-2 s per call on a busy 2-core box. 65536 is the smallest
# count the agent accepts; a key that lives for one call in a private folder, next to a
# process that holds the passphrase anyway, loses no real protection by it.
FAST_S2K = "s2k-count 65536\n"
# Each call must prove it knows the passphrase: the agent caches none.
_NO_CACHING = "default-cache-ttl 0\nmax-cache-ttl 0\n"


def ram_tmp_dir() -> str | None:
    """The RAM-backed shared-memory folder when usable (Linux), else the default temp folder."""
    shm = "/dev/shm"  # noqa: S108 - a private mkdtemp folder inside it, mode 0700
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def gpg_env(home: Path) -> dict[str, str]:
    """The environment for a gpg child using `home`, without the caller's GPG_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GPG_")}
    env["GNUPGHOME"] = str(home)
    # Status lines are language-independent, but keep gpg's own output predictable.
    env["LC_ALL"] = "C"
    return env


def gpgconf_for(gpg_binary: str) -> str | None:
    """gpgconf from the same installation as `gpg_binary` (a path), else the one on PATH."""
    if os.sep in gpg_binary:
        sibling = Path(gpg_binary).with_name("gpgconf")
        if sibling.exists():
            return str(sibling)
    return shutil.which("gpgconf")


def stop_gpg_agent(home: Path, gpgconf: str | None) -> None:
    """Stop the gpg-agent that gpg started for `home`; harmless when none runs."""
    if gpgconf is None:
        return
    subprocess.run(
        [gpgconf, "--homedir", str(home), "--kill", "gpg-agent"],
        env=gpg_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


@contextmanager
def throwaway_home(prefix: str, gpgconf: str | None) -> Iterator[Path]:
    """A fresh GnuPG home for one call, removed afterwards with its agent stopped.

    mkdtemp creates it with mode 0700, as gpg wants for a home; in a RAM-backed folder
    where there is one, so even a passphrase-protected key never reaches the disk.
    """
    home = Path(tempfile.mkdtemp(prefix=prefix, dir=ram_tmp_dir()))
    (home / "gpg-agent.conf").write_text(FAST_S2K + _NO_CACHING, encoding="ascii")
    try:
        yield home
    finally:
        # gpg starts a gpg-agent for a secret key; none may outlive the call.
        stop_gpg_agent(home, gpgconf)
        shutil.rmtree(home, ignore_errors=True)


def isolated_gpg_args(gpg: str, home: Path) -> list[str]:
    """gpg's command line up to the operation: `home` only, no prompts, no key fetching."""
    return [
        gpg,
        # Everything (keyring, trustdb, agent socket) lives in the throwaway home, so no
        # --keyring/--no-default-keyring juggling is needed to keep ~/.gnupg out of it.
        "--homedir",
        str(home),
        "--batch",
        "--no-tty",
        "--no-greeting",
        "--no-permission-warning",
        # Never fetch or import keys from anywhere: only the configured ones are used.
        "--no-auto-key-retrieve",
        "--no-auto-key-import",
        "--disable-dirmngr",
    ]


def import_keys(gpg: str, home: Path, armored: str) -> list[StatusLine]:
    """Import ASCII-armored key(s) into `home`; gpg's status lines say what was imported."""
    proc = subprocess.run(
        [*isolated_gpg_args(gpg, home), "--status-fd", "1", "--import"],
        input=armored.encode("utf-8"),
        capture_output=True,
        env=gpg_env(home),
        check=False,
    )
    return parse_status(proc.stdout)
