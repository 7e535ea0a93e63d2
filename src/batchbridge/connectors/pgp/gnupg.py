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
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batchbridge import progress
from batchbridge.connectors.pgp.base import (
    DecryptorKeys,
    DecryptorLimits,
    VerifiedPlaintext,
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
        with self._temporary_home() as home:
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

    # -- the throwaway home -----------------------------------------------------------

    @contextmanager
    def _temporary_home(self) -> Iterator[Path]:
        # mkdtemp creates the folder with mode 0700, as gpg wants for a home. A RAM-backed
        # folder, where there is one, keeps even the (passphrase-protected) key off disk.
        home = Path(tempfile.mkdtemp(prefix="bbgpg-", dir=ram_tmp_dir()))
        # gpg-agent re-protects an imported key with a hash count calibrated to ~100 ms of
        # CPU, paid again on every use: 1-2 s per call on a busy 2-core box. This copy lives
        # for one call in a private folder next to a process that holds the passphrase
        # anyway, so the minimum count costs no real protection.
        # No passphrase caching either: each call must prove it knows the passphrase.
        (home / "gpg-agent.conf").write_text(
            "s2k-count 65536\ndefault-cache-ttl 0\nmax-cache-ttl 0\n", encoding="ascii"
        )
        try:
            yield home
        finally:
            # gpg starts a gpg-agent for the secret key; stop it so none outlives the call.
            if self._gpgconf is not None:
                subprocess.run(
                    [self._gpgconf, "--homedir", str(home), "--kill", "gpg-agent"],
                    env=gpg_env(home),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            shutil.rmtree(home, ignore_errors=True)

    def _base_args(self, home: Path) -> list[str]:
        return [
            self._gpg,
            # Everything (keyring, trustdb, agent socket) lives in the throwaway home, so no
            # --keyring/--no-default-keyring juggling is needed to keep ~/.gnupg out of it.
            "--homedir",
            str(home),
            "--batch",
            "--no-tty",
            "--no-greeting",
            "--no-permission-warning",
            # Never fetch or import keys from anywhere: only the pinned ones may verify.
            "--no-auto-key-retrieve",
            "--no-auto-key-import",
            "--disable-dirmngr",
        ]

    def _import(self, home: Path, armored: str) -> list[StatusLine]:
        proc = subprocess.run(
            [*self._base_args(home), "--status-fd", "1", "--import"],
            input=armored.encode("utf-8"),
            capture_output=True,
            env=gpg_env(home),
            check=False,
        )
        return parse_status(proc.stdout)

    def _import_partner_keys(self, home: Path) -> set[str]:
        pinned: set[str] = set()
        for index, armored in enumerate(self._keys.partner_public_keys):
            lines = self._import(home, armored)
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
        lines = self._import(home, self._keys.private_key.get_secret_value())
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
            *self._base_args(home),
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


def gpgconf_for(gpg_path: str) -> str | None:
    """gpgconf from the same installation as gpg (used to stop the per-call agent)."""
    sibling = Path(gpg_path).with_name("gpgconf")
    if sibling.exists():
        return str(sibling)
    return shutil.which("gpgconf")
