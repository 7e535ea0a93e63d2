"""The outbound SFTP target's health probe: a small fixed file written, renamed, sized, deleted.

Each step is one call on the target's SSH session (retried like a delivery on a dropped
connection), so a failure names the step, the folder and the server, never a secret or
any patient data (the file holds a fixed sentence). The probe's names start with a dot
(`.batchbridge-health-<random>.part`, then without `.part`), so a receiver that picks up
`*.csv` or `*.pgp` never sees them; whatever the probe created is removed again even
when a step fails.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import secrets

import paramiko

from batchbridge.connectors.ssh.session import SshSession
from batchbridge.errors import TargetError

logger = logging.getLogger(__name__)

PROBE_PREFIX = ".batchbridge-health-"
PROBE_CONTENT = b"batchbridge health probe: this file holds no data and is deleted at once\n"


def probe_remote_dir(session: SshSession, remote_dir: str, *, target: str) -> str:
    """Write, rename, size and delete a probe file in `remote_dir`; what was done, in words.

    TargetError (or TransientTargetError) naming the step that failed.
    """
    token = secrets.token_hex(6)
    part, final = f"{PROBE_PREFIX}{token}.part", f"{PROBE_PREFIX}{token}"
    size = len(PROBE_CONTENT)

    def path(name: str) -> str:
        return posixpath.join(remote_dir, name)

    def write(sftp: paramiko.SFTPClient) -> None:
        with sftp.open(path(part), "wb") as handle:
            handle.write(PROBE_CONTENT)

    def check_size(sftp: paramiko.SFTPClient) -> None:
        found = sftp.stat(path(final)).st_size
        if found != size:
            raise TargetError(
                f"target {target}: health probe: {final} in {remote_dir} on {session.where} "
                f"has {found} bytes, {size} were written"
            )

    deleted = False
    try:
        session.run(f"health probe: write {part} in {remote_dir}", write)
        session.run(
            f"health probe: rename {part} to {final} in {remote_dir}",
            lambda sftp: sftp.rename(path(part), path(final)),
        )
        session.run(f"health probe: check the size of {final} in {remote_dir}", check_size)
        session.run(
            f"health probe: delete {final} in {remote_dir}", lambda sftp: sftp.remove(path(final))
        )
        deleted = True
    finally:
        if not deleted:
            _remove_quietly(session, remote_dir, [part, final], target)
    return (
        f"in {remote_dir} on {session.where}: wrote a {size}-byte probe file (fixed text, "
        f"no data) as {part}, renamed it to {final}, checked its size, deleted it"
    )


def _remove_quietly(session: SshSession, remote_dir: str, names: list[str], target: str) -> None:
    """Best effort after a failed step: the error that stopped the probe is what counts."""
    sftp = session.sftp
    if sftp is None:
        return
    for name in names:
        with contextlib.suppress(Exception):
            sftp.remove(posixpath.join(remote_dir, name))
            logger.info("target %s: removed the health probe's %s", target, name)
