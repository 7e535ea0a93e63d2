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
from pathlib import Path

from batchbridge import progress
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
        ciphertext_size = path.stat().st_size
        with throwaway_home("bbgpg-", self._gpgconf) as home:
            pinned = self._import_partner_keys(home)
            self._import_private_key(home)
            plaintext, lines, returncode = self._run_decrypt(home, path, ciphertext_size)
        try:
            verdict = evaluate(lines, pinned_fingerprints=pinned, returncode=returncode)
        except DecryptError as exc:
            plaintext = b""  # drop our only reference before anything else happens
            if exc.reason in _TRUNCATION_SUSPECTS and file_looks_truncated(path):
                raise IntegrityError(
                    f"{path.name}: message is truncated", reason="truncated"
                ) from None
            raise type(exc)(f"{path.name}: {exc}", reason=exc.reason) from None
        return VerifiedPlaintext(
            data=plaintext,
            signer_fingerprint=verdict.signer_fingerprint,
            signed_at=verdict.signed_at,
        )

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

    def _run_decrypt(
        self, home: Path, path: Path, ciphertext_size: int
    ) -> tuple[bytes, list[StatusLine], int]:
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
        try:
            plaintext = self._read_plaintext(proc, path, ciphertext_size)
        finally:
            if proc.poll() is None:
                proc.kill()
            returncode = proc.wait()
            reader.join()
        return plaintext, parse_status(b"".join(status_chunks)), returncode

    def _read_plaintext(
        self, proc: subprocess.Popen[bytes], path: Path, ciphertext_size: int
    ) -> bytes:
        assert proc.stdout is not None  # stdout=PIPE
        max_bytes = self._limits.max_plaintext_bytes
        max_by_ratio = self._limits.max_compression_ratio * ciphertext_size
        chunks: list[bytes] = []
        total = 0
        with proc.stdout:
            while True:
                chunk = proc.stdout.read(_READ_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes or total > max_by_ratio:
                    proc.kill()
                    chunks.clear()
                    if total > max_bytes:
                        raise PlaintextLimitError(
                            f"{path.name}: plaintext is over the cap of {max_bytes} bytes",
                            reason="plaintext_too_large",
                        )
                    raise PlaintextLimitError(
                        f"{path.name}: plaintext is more than "
                        f"{self._limits.max_compression_ratio:g} times the ciphertext size "
                        "(decompression-bomb guard)",
                        reason="compression_ratio",
                    )
                chunks.append(chunk)
                progress.advance(len(chunk))
                crash_point("mid_decrypt")
        return b"".join(chunks)


def _drain(fd: int, sink: list[bytes]) -> None:
    """Read a pipe to its end (runs in a thread)."""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                return
            sink.append(chunk)
