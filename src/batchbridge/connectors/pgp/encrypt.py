"""Encrypt an outbound extract to the receiver's pinned key(s) and sign it with ours (gpg binary).

Like the decryptor (gnupg.py), each call runs gpg in a fresh throwaway GnuPG
home holding only the configured keys: the receiver's public key(s) and, when signing,
our private key. The plaintext goes in on stdin and the message comes out on stdout,
so neither touches the disk; the outcome is judged from gpg's --status-fd lines only.
The output is a binary OpenPGP message (`.pgp`, not armored): integrity-protected (gpg
2.2+ always adds the MDC for these keys), compressed by gpg's defaults, carrying the
plaintext's file name in its literal packet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from batchbridge.connectors.pgp.home import (
    gpg_env,
    gpgconf_for,
    import_keys,
    isolated_gpg_args,
    throwaway_home,
)
from batchbridge.connectors.pgp.status import StatusLine, parse_status
from batchbridge.errors import ConfigError, TargetError

# The passphrase is written into a pipe before gpg starts; it must fit the pipe buffer.
_MAX_PASSPHRASE_BYTES = 4096
# gpg-error codes (libgpg-error err-codes.h): GPG_ERR_BAD_PASSPHRASE, GPG_ERR_NO_PASSPHRASE.
_PASSPHRASE_ERRORS = frozenset({11, 177})
_IMPORT_HAS_SECRET = 16  # IMPORT_OK flag: "contains private key" (doc/DETAILS)


@dataclass(frozen=True)
class EncryptionKeys:
    """The receiver's public key(s), ASCII-armored, and optionally our signing key."""

    recipient_public_keys: tuple[str, ...]
    signing_key: SecretStr | None = None
    signing_passphrase: SecretStr | None = None


@dataclass(frozen=True)
class EncryptedExtract:
    """An OpenPGP message and the keys it was made with (fingerprints, never key material)."""

    data: bytes
    recipient_fingerprints: tuple[str, ...]
    signer_fingerprint: str | None

    def __repr__(self) -> str:
        return (
            f"EncryptedExtract(<{len(self.data)} bytes>, "
            f"recipients={list(self.recipient_fingerprints)}, signer={self.signer_fingerprint})"
        )


class GpgEncryptor:
    """Encrypt (and sign) in memory with the gpg binary (GnuPG 2.2+)."""

    def __init__(self, keys: EncryptionKeys, gpg_binary: str = "gpg") -> None:
        resolved = shutil.which(gpg_binary)
        if resolved is None:
            raise ConfigError(f"gpg binary {gpg_binary!r} not found (install GnuPG 2.2+)")
        if not keys.recipient_public_keys:
            raise ConfigError("no receiver public key is configured")
        if keys.signing_passphrase is not None and keys.signing_key is None:
            raise ConfigError("a signing passphrase is configured without a signing key")
        passphrase = keys.signing_passphrase
        if (
            passphrase is not None
            and len(passphrase.get_secret_value().encode("utf-8")) > _MAX_PASSPHRASE_BYTES
        ):
            raise ConfigError(
                f"signing key passphrase is longer than {_MAX_PASSPHRASE_BYTES} bytes"
            )
        self._gpg = resolved
        self._gpgconf = gpgconf_for(resolved)
        self._keys = keys

    def encrypt(self, plaintext: bytes, *, file_name: str) -> EncryptedExtract:
        """One binary OpenPGP message of `plaintext` for every receiver key, signed if configured.

        `file_name` goes into the literal packet (what `gpg --use-embedded-filename` writes).
        """
        with throwaway_home("bbgpg-out-", self._gpgconf) as home:
            recipients = self._import_recipients(home)
            signer = self._import_signing_key(home) if self._keys.signing_key else None
            data, lines, returncode = self._run_encrypt(
                home, plaintext, file_name=file_name, recipients=recipients, signer=signer
            )
        _check_outcome(lines, returncode, recipients, signed=signer is not None)
        return EncryptedExtract(
            data=data, recipient_fingerprints=tuple(recipients), signer_fingerprint=signer
        )

    # -- keys into the throwaway home --------------------------------------------------

    def _import(self, home: Path, armored: str) -> list[StatusLine]:
        return [
            line for line in import_keys(self._gpg, home, armored) if line.keyword == "IMPORT_OK"
        ]

    def _import_recipients(self, home: Path) -> list[str]:
        fingerprints: list[str] = []
        for index, armored in enumerate(self._keys.recipient_public_keys):
            imported = [line for line in self._import(home, armored) if len(line.args) >= 2]
            if not imported:
                raise ConfigError(f"receiver public key #{index + 1} could not be imported by gpg")
            if any(int(line.args[0]) & _IMPORT_HAS_SECRET for line in imported):
                raise ConfigError(
                    f"receiver public key #{index + 1} contains a private key; configure only "
                    "the receiver's public key"
                )
            for line in imported:
                fpr = line.args[1].upper()
                if fpr not in fingerprints:
                    fingerprints.append(fpr)
        return fingerprints

    def _import_signing_key(self, home: Path) -> str:
        assert self._keys.signing_key is not None
        lines = self._import(home, self._keys.signing_key.get_secret_value())
        secret = [
            line.args[1].upper()
            for line in lines
            if len(line.args) >= 2 and int(line.args[0]) & _IMPORT_HAS_SECRET
        ]
        if len(set(secret)) != 1:
            raise ConfigError("our signing key must be exactly one OpenPGP private key")
        return secret[0]

    # -- the encryption itself --------------------------------------------------------

    def _run_encrypt(
        self,
        home: Path,
        plaintext: bytes,
        *,
        file_name: str,
        recipients: Sequence[str],
        signer: str | None,
    ) -> tuple[bytes, list[StatusLine], int]:
        args = [
            *isolated_gpg_args(self._gpg, home),
            # Status lines go to stderr with gpg's own messages (ignored: only the
            # '[GNUPG:] ' lines are read). Input comes from stdin, so no file name leaks.
            "--status-fd",
            "2",
            # Safe only because this keyring holds nothing but the configured keys.
            "--trust-model",
            "always",
            "--pinentry-mode",
            "loopback",
            "--set-filename",
            file_name,
        ]
        passphrase_read: int | None = None
        pass_fds: list[int] = []
        if signer is not None:
            args += ["--local-user", signer, "--sign"]
            # Always from a pipe (empty when none is configured): gpg must never fall back
            # to asking anyone, and a protected key without one fails as a wrong passphrase.
            secret = b""
            if self._keys.signing_passphrase is not None:
                secret = self._keys.signing_passphrase.get_secret_value().encode("utf-8")
            passphrase_read, passphrase_write = os.pipe()
            os.write(passphrase_write, secret + b"\n")
            os.close(passphrase_write)
            pass_fds.append(passphrase_read)
            args += ["--passphrase-fd", str(passphrase_read)]
        for fpr in recipients:
            args += ["--recipient", fpr]
        args += ["--output", "-", "--encrypt"]
        try:
            proc = subprocess.run(
                args,
                input=plaintext,
                capture_output=True,
                pass_fds=pass_fds,
                env=gpg_env(home),
                check=False,
            )
        finally:
            if passphrase_read is not None:
                os.close(passphrase_read)
        return proc.stdout, parse_status(proc.stderr), proc.returncode


def _error_code(value: str) -> int | None:
    """The gpg-error code of a status argument (the low 16 bits of source+code)."""
    try:
        return int(value) & 0xFFFF
    except ValueError:
        return None


def _check_outcome(
    lines: Sequence[StatusLine], returncode: int, recipients: Sequence[str], *, signed: bool
) -> None:
    """Require END_ENCRYPTION (and SIG_CREATED when signing); name what failed otherwise."""
    for line in lines:
        if line.keyword == "INV_RECP":
            named = line.args[1].upper() if len(line.args) >= 2 else ""
            which = f"#{recipients.index(named) + 1} " if named in recipients else ""
            raise ConfigError(
                f"receiver public key {which}cannot be used to encrypt (expired, revoked or "
                "without an encryption subkey)",
                reason="recipient_key_unusable",
            )
        if line.keyword == "INV_SGNR":
            raise ConfigError(
                "our signing key cannot be used to sign (expired, revoked or not a signing key)",
                reason="signing_key_unusable",
            )
    passphrase_failed = any(
        line.keyword in ("BAD_PASSPHRASE", "MISSING_PASSPHRASE")
        or (
            line.keyword in ("ERROR", "FAILURE")
            and any(_error_code(arg) in _PASSPHRASE_ERRORS for arg in line.args[1:])
        )
        for line in lines
    )
    if passphrase_failed:
        raise ConfigError(
            "our signing key could not be unlocked: signing_passphrase is wrong or missing",
            reason="signing_passphrase",
        )
    ended = any(line.keyword == "END_ENCRYPTION" for line in lines)
    sig_created = any(line.keyword == "SIG_CREATED" for line in lines)
    if returncode != 0 or not ended or (signed and not sig_created):
        raise TargetError(
            f"gpg could not encrypt the extract (exit status {returncode})",
            reason="encrypt_failed",
        )
