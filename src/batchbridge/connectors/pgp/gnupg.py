"""Default decryptor: the `gpg` binary, streaming, in a throwaway GNUPGHOME with only pinned keys.

Each call builds a fresh GnuPG home in a private temporary folder, imports our private
key and the feed's pinned partner keys into it (nothing else: no ~/.gnupg, no key
servers, no keys auto-imported from signatures), runs `gpg --decrypt` with the file on
stdin and the plaintext on a stdout pipe, and decides only from gpg's machine-readable
--status-fd lines (see status.py). The plaintext is read in chunks into memory, the
size and compression-ratio caps are enforced while it streams (gpg is killed as soon as
one is exceeded), and nothing is handed on unless every check passed. Plaintext is never
written to disk; the temporary home holds only keys and is removed after each call.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from batchbridge.connectors.pgp.base import (
    DecryptorKeys,
    DecryptorLimits,
    VerifiedPlaintext,
)
from batchbridge.connectors.pgp.home import (
    gpg_env,
    gpgconf_for,
    import_keys,
    isolated_gpg_args,
    throwaway_home,
)
from batchbridge.connectors.pgp.packets import file_looks_truncated
from batchbridge.connectors.pgp.status import StatusLine, evaluate, parse_status
from batchbridge.crashpoints import crash_point
from batchbridge.errors import ConfigError, DecryptError, IntegrityError, PlaintextLimitError

_READ_CHUNK = 1024 * 1024
# The passphrase is written into a pipe before gpg starts; it must fit the pipe buffer.
_MAX_PASSPHRASE_BYTES = 4096
# Reasons after which a cut-off file is the more useful explanation. gpg reads a key id
# cut short as one padded with FF bytes, so a file cut inside its first packet otherwise
# says "encrypted to key id FFFFFFFFFFFFFFFF".
_TRUNCATION_SUSPECTS = frozenset(
    {
        "bad_mdc",
        "corrupt",
        "not_openpgp",
        "decrypt_failed",
        "bad_armor",
        "gpg_failed",
        "wrong_recipient",
    }
)


class GnuPGDecryptor:
    """Decrypt and verify with the gpg binary (GnuPG 2.2+); fast and flat in memory use."""

    def __init__(
        self, keys: DecryptorKeys, limits: DecryptorLimits, gpg_binary: str = "gpg"
    ) -> None:
        resolved = shutil.which(gpg_binary)
        if resolved is None:
            raise ConfigError(
                f"gpg binary {gpg_binary!r} not found (install GnuPG 2.2+ or use engine 'pgpy')"
            )
        passphrase = keys.passphrase.get_secret_value() if keys.passphrase else None
        if passphrase is not None and len(passphrase.encode("utf-8")) > _MAX_PASSPHRASE_BYTES:
            raise ConfigError(
                f"private key passphrase is longer than {_MAX_PASSPHRASE_BYTES} bytes"
            )
        if not keys.partner_public_keys:
            raise ConfigError("no partner public key is configured")
        self._gpg = resolved
        self._gpgconf = gpgconf_for(resolved)
        self._keys = keys
        self._limits = limits

    def decrypt_and_verify(self, path: Path) -> VerifiedPlaintext:
        """Decrypt `path`; require an MDC and a valid signature by a pinned partner key."""
        with self.open_stream(path) as stream:
            chunks = list(stream.blocks())
            try:
                signer = stream.verified()
            except DecryptError:
                chunks.clear()  # drop the plaintext before the error travels on
                raise
        return VerifiedPlaintext(
            data=b"".join(chunks), signer_fingerprint=signer[0], signed_at=signer[1]
        )

    @contextmanager
    def open_stream(self, path: Path) -> Iterator[GpgStream]:
        """The plaintext of `path` as it is decrypted; `verified()` once it has all been read.

        The caller must not let anything of the plaintext become visible before
        `verified()` returned: gpg can only judge the signature at the end.
        """
        with throwaway_home("bbgpg-", self._gpgconf) as home:
            pinned = self._import_partner_keys(home)
            self._import_private_key(home)
            stream = GpgStream(self._start_decrypt(home, path), path, pinned, self._limits)
            try:
                yield stream
            finally:
                stream.close()

    # -- keys into the throwaway home --------------------------------------------------

    def _import_partner_keys(self, home: Path) -> set[str]:
        pinned: set[str] = set()
        for index, armored in enumerate(self._keys.partner_public_keys):
            lines = import_keys(self._gpg, home, armored)
            imported = [
                line for line in lines if line.keyword == "IMPORT_OK" and len(line.args) >= 2
            ]
            if not imported:
                raise ConfigError(f"partner public key #{index + 1} could not be imported by gpg")
            if any(int(line.args[0]) & 16 for line in imported):
                raise ConfigError(
                    f"partner public key #{index + 1} contains a private key; pin only the "
                    "partner's public key"
                )
            pinned.update(line.args[1].upper() for line in imported)
        return pinned

    def _import_private_key(self, home: Path) -> None:
        lines = import_keys(self._gpg, home, self._keys.private_key.get_secret_value())
        # IMPORT_OK flag 16 = "contains private key" (DETAILS, IMPORT_OK).
        if not any(
            line.keyword == "IMPORT_OK" and line.args and int(line.args[0]) & 16 for line in lines
        ):
            raise ConfigError("our private key could not be imported by gpg")

    # -- the decryption itself --------------------------------------------------------

    def _start_decrypt(self, home: Path, path: Path) -> _GpgProcess:
        passphrase = self._keys.passphrase
        status_read, status_write = os.pipe()
        pass_fds = [status_write]
        args = [
            *isolated_gpg_args(self._gpg, home),
            "--status-fd",
            str(status_write),
            # Our key's passphrase comes from us, never from a pinentry dialog.
            "--pinentry-mode",
            "loopback",
            # "always" is safe only because this keyring holds nothing but the pinned partner
            # keys and our own key; which key signed is then checked from VALIDSIG.
            "--trust-model",
            "always",
            "--no-symkey-cache",
        ]
        passphrase_read: int | None = None
        if passphrase is not None:
            passphrase_read, passphrase_write = os.pipe()
            os.write(passphrase_write, passphrase.get_secret_value().encode("utf-8") + b"\n")
            os.close(passphrase_write)
            pass_fds.append(passphrase_read)
            args += ["--passphrase-fd", str(passphrase_read)]
        args += ["--output", "-", "--decrypt"]

        status_chunks: list[bytes] = []
        reader = threading.Thread(
            target=_drain, args=(status_read, status_chunks), name="gpg-status", daemon=True
        )
        try:
            with path.open("rb") as ciphertext:
                proc = subprocess.Popen(
                    args,
                    stdin=ciphertext,
                    stdout=subprocess.PIPE,
                    # gpg's human messages can echo the literal packet's file name: dropped.
                    stderr=subprocess.DEVNULL,
                    pass_fds=pass_fds,
                    env=gpg_env(home),
                    bufsize=0,
                )
        except BaseException:
            os.close(status_read)
            raise
        finally:
            os.close(status_write)
            if passphrase_read is not None:
                os.close(passphrase_read)
        # A separate thread reads the status pipe so that neither pipe can fill and stall gpg.
        reader.start()
        return _GpgProcess(proc, reader, status_chunks)


@dataclass
class _GpgProcess:
    """A running `gpg --decrypt`: its plaintext pipe and the thread collecting its status."""

    proc: subprocess.Popen[bytes]
    reader: threading.Thread
    status_chunks: list[bytes]

    def stop(self) -> tuple[list[StatusLine], int]:
        """Wait for gpg (killing it if it still runs) and its status; (status lines, exit code)."""
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        returncode = self.proc.wait()
        self.reader.join()
        return parse_status(b"".join(self.status_chunks)), returncode


class GpgStream:
    """One file's plaintext from gpg, block by block, then gpg's verdict (see open_stream)."""

    def __init__(
        self, run: _GpgProcess, path: Path, pinned: set[str], limits: DecryptorLimits
    ) -> None:
        self._run = run
        self._path = path
        self._pinned = pinned
        self._limits = limits
        self._ciphertext_size = path.stat().st_size
        self._finished = False
        self._signer: tuple[str, datetime | None] | None = None

    def blocks(self) -> Iterator[bytes]:
        """Plaintext blocks as gpg writes them; the caps are enforced as they stream."""
        stdout = self._run.proc.stdout
        assert stdout is not None  # stdout=PIPE
        max_bytes = self._limits.max_plaintext_bytes
        max_by_ratio = self._limits.max_compression_ratio * self._ciphertext_size
        total = 0
        while True:
            chunk = stdout.read(_READ_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes or total > max_by_ratio:
                self._run.proc.kill()
                if total > max_bytes:
                    raise PlaintextLimitError(
                        f"{self._path.name}: plaintext is over the cap of {max_bytes} bytes",
                        reason="plaintext_too_large",
                    )
                raise PlaintextLimitError(
                    f"{self._path.name}: plaintext is more than "
                    f"{self._limits.max_compression_ratio:g} times the ciphertext size "
                    "(decompression-bomb guard)",
                    reason="compression_ratio",
                )
            crash_point("mid_decrypt")
            yield chunk
        self._finished = True

    def verified(self) -> tuple[str, datetime | None]:
        """(signer fingerprint, signed at) once every block was read; DecryptError if not good.

        Called early (a parse error before the end), the rest is read and dropped first,
        so a file whose signature fails says so rather than what the parser found.
        """
        if self._signer is not None:
            return self._signer
        if not self._finished:
            for _block in self.blocks():
                pass
        lines, returncode = self._run.stop()
        try:
            verdict = evaluate(lines, pinned_fingerprints=self._pinned, returncode=returncode)
        except DecryptError as exc:
            if exc.reason in _TRUNCATION_SUSPECTS and file_looks_truncated(self._path):
                raise IntegrityError(
                    f"{self._path.name}: message is truncated", reason="truncated"
                ) from None
            raise type(exc)(f"{self._path.name}: {exc}", reason=exc.reason) from None
        self._signer = (verdict.signer_fingerprint, verdict.signed_at)
        return self._signer

    def close(self) -> None:
        """Stop gpg if it still runs (the caller gave up early)."""
        self._run.stop()


def _drain(fd: int, sink: list[bytes]) -> None:
    """Read a pipe to its end (runs in a thread)."""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                return
            sink.append(chunk)
