"""SshSession: the one pinned, key-authenticated SFTP connection of a source or a target."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import paramiko

from batchbridge.connectors.lifecycle import ClosedOnExit
from batchbridge.connectors.retry import RetryPolicy, call_with_retries
from batchbridge.connectors.ssh.connect import (
    SftpSession,
    SshFailure,
    classify_ssh_failure,
    load_client_key,
    open_sftp_session,
)
from batchbridge.connectors.ssh.host_keys import describe_key
from batchbridge.errors import BatchbridgeError

logger = logging.getLogger(__name__)
T = TypeVar("T")

# A dropped link is worth waiting for, but a run should learn within minutes that it stays down.
MAX_BACKOFF_SECONDS = 30.0


def ssh_retry_policy(max_attempts: int, backoff_seconds: float = 1.0) -> RetryPolicy:
    """How SSH connections retry: `max_attempts` in all, waits doubling from `backoff_seconds`."""
    return RetryPolicy(
        max_attempts=max_attempts, initial_wait=backoff_seconds, max_wait=MAX_BACKOFF_SECONDS
    )


class SshEndpoint(Protocol):
    """The connection settings an SFTP source and an SFTP target config both carry."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def username(self) -> str: ...

    @property
    def private_key(self) -> str: ...

    @property
    def private_key_passphrase(self) -> str | None: ...

    @property
    def connect_timeout_seconds(self) -> float: ...

    @property
    def max_attempts(self) -> int: ...


ErrorMapper = Callable[[Exception, SshFailure | None], BatchbridgeError | None]
"""A connector's rule for its error tree: given an exception and how SSH sorted it (None
when it is no SSH/SFTP failure), the error to raise instead, or None to re-raise it as is."""


class SshSession:
    """Runs SFTP operations on one lazily opened connection, reconnecting after a drop.

    Only the `pinned` host keys are accepted and only the configured private key is
    offered (see connect.py). Every failure goes through `map_error`; a failure mapped
    to `transient` closes the connection and the operation is tried again through the
    one retry layer (connectors/retry.py): `max_attempts` in all, jittered backoff from
    `backoff_seconds`. Calls are serialized by a lock, so threads may share a session.
    """

    def __init__(
        self,
        endpoint: SshEndpoint,
        *,
        pinned: Sequence[paramiko.PKey],
        transient: type[BatchbridgeError],
        map_error: ErrorMapper,
        base_dir: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff_seconds: float = 1.0,
        sftp_class: type[paramiko.SFTPClient] = paramiko.SFTPClient,
        label: str = "",
        log: logging.Logger = logger,
    ) -> None:
        self.endpoint = endpoint
        self.where = f"{endpoint.host}:{endpoint.port}"
        self.policy = ssh_retry_policy(endpoint.max_attempts, backoff_seconds)
        self._pinned = list(pinned)
        self._transient = transient
        self._map_error = map_error
        self._base_dir = base_dir
        self._sleep = sleep
        self._sftp_class = sftp_class
        self._label = label
        self._log = log
        self._pkey: paramiko.PKey | None = None
        self._open: SftpSession | None = None
        self._lock = threading.RLock()

    @property
    def sftp(self) -> paramiko.SFTPClient | None:
        """The SFTP channel now open, or None (before the first call, after close)."""
        return None if self._open is None else self._open.sftp

    def run(self, action: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run `operation` on the SFTP channel, connecting first when none is open.

        `action` ("list /in", "fetch X") names the step in errors and retry warnings.
        """
        step = f"{self._label}{action} on {self.where}"

        def note(error: BaseException | None, attempt: int, attempts: int, _: float) -> str:
            return f"{step}: attempt {attempt} of {attempts} failed ({error}); reconnecting"

        def give_up(last: BaseException, attempts: int) -> BaseException:
            return self._transient(f"{step} failed after {attempts} attempts; last error: {last}")

        with self._lock:
            return call_with_retries(
                lambda: self._attempt(action, operation),
                policy=self.policy,
                transient=self._transient,
                log=self._log,
                sleep=self._sleep,
                note=note,
                give_up=give_up,
            )

    def close(self) -> None:
        """Close the SFTP channel and the SSH connection (a later call reconnects)."""
        with self._lock:
            self._disconnect()

    def _attempt(self, action: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        try:
            return operation(self._connect())
        except Exception as exc:
            failure = classify_ssh_failure(
                exc,
                action=action,
                where=self.where,
                username=self.endpoint.username,
                pinned=self._pinned,
            )
            error = self._map_error(exc, failure)
            if error is None:
                raise
            if isinstance(error, self._transient):
                # The link is suspect: the next attempt starts on a fresh connection.
                self._disconnect()
            if error is exc:
                raise
            raise error from exc

    def _connect(self) -> paramiko.SFTPClient:
        if self._open is not None and self._open.is_active():
            return self._open.sftp
        self._disconnect()
        endpoint = self.endpoint
        opened = open_sftp_session(
            host=endpoint.host,
            port=endpoint.port,
            username=endpoint.username,
            pkey=self._private_key(),
            pinned=self._pinned,
            timeout=endpoint.connect_timeout_seconds,
            sftp_class=self._sftp_class,
        )
        self._open = opened
        self._log.info(
            "%sconnected to %s as %s (host key %s)",
            self._label,
            self.where,
            endpoint.username,
            describe_key(opened.server_key),
        )
        return opened.sftp

    def _disconnect(self) -> None:
        opened, self._open = self._open, None
        if opened is not None:
            opened.close()

    def _private_key(self) -> paramiko.PKey:
        if self._pkey is None:
            self._pkey = load_client_key(
                self.endpoint.private_key,
                self.endpoint.private_key_passphrase,
                base_dir=self._base_dir,
            )
        return self._pkey


class OverSshSession(ClosedOnExit):
    """Base of a connector that talks over one SshSession: `close()` ends it, so does `with`."""

    _session: SshSession

    def close(self) -> None:
        """Close the SFTP session and the SSH connection (a later call reconnects)."""
        self._session.close()
