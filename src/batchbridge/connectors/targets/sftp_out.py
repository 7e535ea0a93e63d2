"""Outbound SFTP target: one extract file per source file, written under a temporary name.

A load renders the request's rows (natural key + configured columns, in source row
order; the internal row number is not sent) as CSV or Parquet (see extract.py),
optionally encrypts them to the receiver's key(s) and signs them with ours (binary
`.pgp`, see connectors/pgp/encrypt.py), and delivers the file to `remote_dir`:

1. Temporary files this target left for the same name (`.<name>.<token>.part`/`.old`,
   from a killed run) are removed. The feed lock keeps two runs of a feed apart.
2. If `<name>` exists with identical content, nothing is written and every row counts
   as unchanged. Plain output: same size and same sha256 as the bytes we would write.
   Encrypted output (fresh session keys make every ciphertext different): the sidecar
   `<name>.sha256` must name the plaintext digest we would encrypt *and* the digest of
   the `<name>` actually on the server. The sidecar is removed before `<name>` is
   replaced and written after it, so a sidecar that exists always describes the file
   next to it; a run killed in between leaves no sidecar, and the next run rewrites.
   A changed receiver key alone does not resend an identical extract.
3. Otherwise the bytes go to `.<name>.<token>.part` (flushed with fsync@openssh.com when
   the server offers it), whose size is checked against the bytes sent, then renamed
   over `<name>`: posix-rename@openssh.com when the server announces it (atomic
   replace); else the old file is first moved aside, the new one renamed in, and the
   old one removed (SFTP v3 rename does not overwrite). `<name>` is stat-ed again and
   must have the size sent. New name: rows inserted; replaced: rows updated.

Every step is safe to repeat, so a transient failure (connection dropped) retries the
whole delivery on a fresh connection, `max_attempts` times with jittered backoff.
A file keeps no state about other files, so `full_snapshot` inactivates nothing here.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import paramiko.sftp as sftp_codes
from pydantic import SecretStr

from batchbridge.config import LoadedFeed, SftpTargetConfig
from batchbridge.connectors.pgp.encrypt import EncryptionKeys, GpgEncryptor
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.ssh.connect import ExtendedSftpClient, SshFailure, prefetch_quietly
from batchbridge.connectors.ssh.host_keys import parse_host_keys
from batchbridge.connectors.ssh.session import OverSshSession, SshSession
from batchbridge.connectors.targets.base import LoadRequest, LoadResult
from batchbridge.connectors.targets.extract import (
    Outcome,
    Sidecar,
    aside_name,
    check_name_template,
    delivery_counts,
    extension,
    is_leftover,
    part_name,
    render_extract,
    render_remote_name,
    sidecar_name,
)
from batchbridge.connectors.targets.rows import check_load_request
from batchbridge.connectors.targets.sftp_probe import probe_remote_dir
from batchbridge.errors import BatchbridgeError, ConfigError, TargetError, TransientTargetError
from batchbridge.validations.base import ROW_COLUMN

__all__ = ["SftpTarget", "open_sftp_target"]

logger = logging.getLogger(__name__)

POSIX_RENAME = "posix-rename@openssh.com"
FSYNC = "fsync@openssh.com"
_CHUNK = 32768
_MAX_SIDECAR_BYTES = 4096


@dataclass(frozen=True)
class _Extract:
    """What one load delivers: the remote name, the plaintext, and how many rows it holds."""

    name: str
    load_id: str
    plaintext: bytes
    plaintext_sha256: str
    rows: int


class SftpTarget(OverSshSession):
    """The Target protocol over SFTP (paramiko): one extract file per source file.

    Connects lazily; `close()` ends the connection. Calls are serialized by a lock, so
    one instance may be shared by threads. See the module docstring for the protocol.
    """

    def __init__(
        self,
        config: SftpTargetConfig,
        *,
        feed: str,
        base_dir: Path | None = None,
        encryptor: GpgEncryptor | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff_seconds: float = 1.0,
    ) -> None:
        if (config.pgp is None) != (encryptor is None):
            raise ConfigError(
                f"target {config.name}: an encryptor is needed exactly when pgp is configured"
            )
        check_name_template(config.file_name, config.name)
        self.name = config.name
        self.config = config
        self.columns = tuple(dict.fromkeys(config.columns))
        if ROW_COLUMN in self.columns:
            raise ConfigError(f"target {config.name}: column {ROW_COLUMN!r} is reserved")
        self._feed = feed
        self._encryptor = encryptor
        self._session = SshSession(
            config,
            pinned=parse_host_keys(config.host_keys, field=f"targets[{config.name}].host_keys"),
            transient=TransientTargetError,
            map_error=self._target_error,
            base_dir=base_dir,
            sleep=sleep,
            backoff_seconds=backoff_seconds,
            sftp_class=ExtendedSftpClient,
            label=f"target {config.name}: ",
            log=logger,
        )
        self.where = self._session.where

    def __repr__(self) -> str:
        return f"SftpTarget(name={self.name!r}, where={self.where}:{self.config.remote_dir})"

    # -- Target protocol --------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadResult:
        """Deliver the request's rows as one file, or keep the identical file already there."""
        extract = self._extract(request)
        outcome = self._session.run(
            f"deliver {extract.name}", lambda sftp: self._deliver(sftp, extract)
        )
        counts = delivery_counts(outcome, extract.rows)
        logger.info(
            "target %s: %s %s (%d rows) on %s:%s",
            self.name,
            {"inserted": "delivered", "updated": "replaced", "unchanged": "kept"}[outcome],
            extract.name,
            extract.rows,
            self.where,
            self.config.remote_dir,
        )
        return LoadResult(
            target=self.name,
            load_id=request.load_id,
            rows_inserted=counts.inserted,
            rows_updated=counts.updated,
            rows_unchanged=counts.unchanged,
            rows_rejected=0,
            rows_confirmed=counts.confirmed,
        )

    def probe_health(self, tenant: str) -> str:
        """Health probe: a fixed probe file written, renamed, sized and deleted (sftp_probe)."""
        return probe_remote_dir(self._session, self.config.remote_dir, target=self.name)

    # -- what to deliver (no server needed) -------------------------------------------

    def remote_name(self, request: LoadRequest) -> str:
        """The remote file name this request's extract is delivered under.

        {feed} is the request's feed, or the feed this target was opened for.
        """
        return render_remote_name(
            self.config.file_name,
            target=self.name,
            tenant=request.tenant,
            feed=request.feed or self._feed,
            source_name=request.source_name,
            file_id=request.file_id,
            ext=extension(self.config.file_format, encrypted=self._encryptor is not None),
        )

    def _extract(self, request: LoadRequest) -> _Extract:
        checked = check_load_request(self.name, request, self.columns, {ROW_COLUMN})
        frame = checked.frame.sort(ROW_COLUMN).drop(ROW_COLUMN)
        plaintext = render_extract(frame, self.config.file_format)
        return _Extract(
            name=self.remote_name(request),
            load_id=request.load_id,
            plaintext=plaintext,
            plaintext_sha256=hashlib.sha256(plaintext).hexdigest(),
            rows=frame.height,
        )

    # -- one attempt of the delivery --------------------------------------------------

    def _deliver(self, sftp: paramiko.SFTPClient, extract: _Extract) -> Outcome:
        self._remove_leftovers(sftp, extract.name)
        existing = self._lstat(sftp, extract.name)
        if existing is not None and (
            existing.st_mode is None or not stat.S_ISREG(existing.st_mode)
        ):
            raise TargetError(
                f"target {self.name}: {extract.name} in {self.config.remote_dir} on "
                f"{self.where} is not a regular file; not replaced",
                reason="remote_not_a_file",
            )
        if existing is not None and self._is_identical(sftp, extract, existing):
            return "unchanged"
        if self._encryptor is None:
            self._put(sftp, extract.name, extract.plaintext, extract.load_id)
            return "inserted" if existing is None else "updated"
        # The sidecar goes first: from here until the new one is written, none exists.
        sidecar = sidecar_name(extract.name)
        if self._lstat(sftp, sidecar) is not None:
            sftp.remove(self._path(sidecar))
        plaintext_name = extract.name.removesuffix(".pgp")
        encrypted = self._encryptor.encrypt(extract.plaintext, file_name=plaintext_name)
        self._put(sftp, extract.name, encrypted.data, extract.load_id)
        record = Sidecar(
            plaintext_sha256=extract.plaintext_sha256,
            plaintext_name=plaintext_name,
            delivered_sha256=hashlib.sha256(encrypted.data).hexdigest(),
            delivered_name=extract.name,
        )
        self._put(sftp, sidecar, record.render(), extract.load_id)
        return "inserted" if existing is None else "updated"

    def _is_identical(
        self, sftp: paramiko.SFTPClient, extract: _Extract, existing: paramiko.SFTPAttributes
    ) -> bool:
        if self._encryptor is None:
            if existing.st_size != len(extract.plaintext):
                return False
            return self._remote_sha256(sftp, extract.name) == extract.plaintext_sha256
        sidecar = self._read_sidecar(sftp, sidecar_name(extract.name))
        if sidecar is None or sidecar.plaintext_sha256 != extract.plaintext_sha256:
            return False
        return self._remote_sha256(sftp, extract.name) == sidecar.delivered_sha256

    def _read_sidecar(self, sftp: paramiko.SFTPClient, name: str) -> Sidecar | None:
        attrs = self._lstat(sftp, name)
        if attrs is None or attrs.st_mode is None or not stat.S_ISREG(attrs.st_mode):
            return None
        if attrs.st_size is None or attrs.st_size > _MAX_SIDECAR_BYTES:
            return None
        with sftp.open(self._path(name), "rb") as handle:
            return Sidecar.parse(handle.read(_MAX_SIDECAR_BYTES + 1))

    def _remote_sha256(self, sftp: paramiko.SFTPClient, name: str) -> str:
        digest = hashlib.sha256()
        with sftp.open(self._path(name), "rb") as handle:
            size = handle.stat().st_size or 0
            if size > 0:
                prefetch_quietly(handle, size)
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def _put(self, sftp: paramiko.SFTPClient, name: str, data: bytes, load_id: str) -> None:
        """Upload under a temporary name, verify its size, rename it over `name`, verify."""
        temporary = part_name(name, load_id)
        path = self._path(temporary)
        with sftp.open(path, "wb") as handle:
            handle.set_pipelined(True)
            for start in range(0, len(data), _CHUNK):
                handle.write(data[start : start + _CHUNK])
            if _offers(sftp, FSYNC):
                # Sent after the writes on the same channel: the server handles it after them.
                client: Any = sftp  # the request layer is not in the type stubs
                client._request(sftp_codes.CMD_EXTENDED, FSYNC, handle.handle)
        self._check_size(sftp, temporary, len(data))
        self._rename_over(sftp, temporary, name, load_id)
        self._check_size(sftp, name, len(data))

    def _check_size(self, sftp: paramiko.SFTPClient, name: str, expected: int) -> None:
        size = sftp.stat(self._path(name)).st_size
        if size != expected:
            raise TransientTargetError(
                f"target {self.name}: {name} on {self.where} has {size} bytes after upload, "
                f"{expected} were sent"
            )

    def _rename_over(
        self, sftp: paramiko.SFTPClient, source: str, target: str, load_id: str
    ) -> None:
        if _offers(sftp, POSIX_RENAME):
            sftp.posix_rename(self._path(source), self._path(target))
            return
        aside: str | None = None
        if self._lstat(sftp, target) is not None:
            aside = aside_name(target, load_id)
            sftp.rename(self._path(target), self._path(aside))
        sftp.rename(self._path(source), self._path(target))
        if aside is not None:
            sftp.remove(self._path(aside))

    def _remove_leftovers(self, sftp: paramiko.SFTPClient, name: str) -> None:
        for entry in sftp.listdir(self.config.remote_dir):
            if is_leftover(entry, name):
                sftp.remove(self._path(entry))
                logger.info(
                    "target %s: removed %s left by an interrupted delivery", self.name, entry
                )

    def _lstat(self, sftp: paramiko.SFTPClient, name: str) -> paramiko.SFTPAttributes | None:
        try:
            return sftp.lstat(self._path(name))
        except FileNotFoundError:
            return None

    def _path(self, name: str) -> str:
        return posixpath.join(self.config.remote_dir, name)

    def _target_error(self, exc: Exception, failure: SshFailure | None) -> BatchbridgeError | None:
        """A target's reading of a failure: it fails the load, naming the target."""
        if isinstance(exc, TargetError):
            return exc
        if isinstance(exc, ConfigError):
            # A key that gpg or paramiko refused at the point of use: name the target.
            return type(exc)(f"target {self.name}: {exc}", reason=exc.reason)
        if isinstance(exc, BatchbridgeError):
            # The shared connection code raises HostKeyError (a SourceError): here the
            # server is a target's, so it fails the load, keeping its reason code.
            return TargetError(f"target {self.name}: {exc}", reason=exc.reason)
        if failure is None:
            return None
        message = f"target {self.name}: {failure.message}"
        if failure.kind == "transient":
            return TransientTargetError(message, reason=failure.reason)
        reason = failure.reason or ("host_key_mismatch" if failure.kind == "host_key" else None)
        return TargetError(message, reason=reason)


def _offers(sftp: paramiko.SFTPClient, extension_name: str) -> bool:
    return isinstance(sftp, ExtendedSftpClient) and sftp.offers(extension_name)


def open_sftp_target(loaded: LoadedFeed, config: SftpTargetConfig) -> SftpTarget:
    """Build the outbound SFTP target a feed's config describes (PGP keys resolved here)."""
    encryptor = None
    if config.pgp is not None:
        base_dir = loaded.base_dir

        def secret(ref: str) -> SecretStr:
            return resolve_secret(ref, base_dir=base_dir)

        pgp = config.pgp
        keys = EncryptionKeys(
            recipient_public_keys=tuple(
                secret(ref).get_secret_value() for ref in pgp.recipient_public_keys
            ),
            signing_key=secret(pgp.signing_key) if pgp.signing_key else None,
            signing_passphrase=secret(pgp.signing_passphrase) if pgp.signing_passphrase else None,
        )
        try:
            encryptor = GpgEncryptor(keys)
        except ConfigError as exc:
            raise ConfigError(f"target {config.name}: {exc}", reason=exc.reason) from None
    return SftpTarget(
        config, feed=loaded.config.feed, base_dir=loaded.base_dir, encryptor=encryptor
    )
