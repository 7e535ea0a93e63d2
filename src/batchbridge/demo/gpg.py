"""Drive the real `gpg` binary in a private GNUPGHOME to make keys and files the way partners do."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from batchbridge.connectors.lifecycle import ClosedOnExit
from batchbridge.connectors.pgp.home import FAST_S2K, gpgconf_for, stop_gpg_agent

CompressAlgo = Literal["zlib", "zip", "bzip2", "none"]
KeyAlgo = Literal["ed25519", "rsa3072", "rsa2048"]

# gpg prints a revocation certificate with its armor header prefixed by ':' so that it
# cannot be imported by accident; importing it on purpose means removing that guard.
_REV_GUARD = re.compile(r"^:(-----BEGIN PGP PUBLIC KEY BLOCK-----)$", re.MULTILINE)


class GpgCommandError(RuntimeError):
    """Raised when a gpg command run by this test helper fails (message holds gpg's stderr)."""


@dataclass
class GpgKeyring(ClosedOnExit):
    """A throwaway GnuPG home for tests, demos and benchmarks; never touches ~/.gnupg.

    Keys are generated fast (ed25519 + cv25519 by default). Call `close()` (or use it as
    a context manager) to stop the gpg-agent that gpg starts for secret-key operations.
    """

    home: Path
    gpg_binary: str = "gpg"

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        self.home.mkdir(parents=True, exist_ok=True)
        # gpg refuses (or warns about) a home that others can read.
        self.home.chmod(0o700)
        agent_conf = self.home / "gpg-agent.conf"
        if not agent_conf.exists():
            # Test keys need no costly re-protection (see FAST_S2K); unlike a throwaway
            # home, this one lives on, so the agent may cache passphrases.
            agent_conf.write_text(FAST_S2K, encoding="ascii")

    def close(self) -> None:
        """Stop the gpg-agent serving this home; harmless when none runs.

        gpg starts a new agent if the keyring is used again: close again after that.
        """
        stop_gpg_agent(self.home, gpgconf_for(self.gpg_binary))

    # -- keys -------------------------------------------------------------------------

    def generate_key(
        self,
        name: str,
        email: str,
        *,
        passphrase: str | None = None,
        expire: str = "0",
        algo: KeyAlgo = "ed25519",
        created_at: datetime | None = None,
    ) -> str:
        """Create a signing primary key plus an encryption subkey; return the primary fingerprint.

        `expire` is gpg's syntax: "0" (never), "1d", "2y", "seconds=N" or an ISO date.
        `created_at` backdates the key (gpg --faked-system-time), e.g. to make a key that is
        already expired today or to sign messages "in the past" with it.
        """
        if algo == "ed25519":
            primary_algo, sub_algo = "ed25519", "cv25519"
        else:
            primary_algo, sub_algo = algo, algo
        uid = f"{name} <{email}>"
        result = self._gpg(
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            passphrase or "",
            "--quick-gen-key",
            uid,
            primary_algo,
            "sign",
            expire,
            faked_time=created_at,
        )
        match = re.search(r"^\[GNUPG:\] KEY_CREATED [PB] ([0-9A-F]{40})", result, re.MULTILINE)
        if match is None:
            raise GpgCommandError(f"gpg did not report a created key for {uid!r}")
        fpr = match.group(1)
        self._gpg(
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            passphrase or "",
            "--quick-add-key",
            fpr,
            sub_algo,
            "encr",
            expire,
            faked_time=created_at,
        )
        return fpr

    def export_public(self, fpr: str) -> str:
        """ASCII-armored public key (with its subkeys and any revocation)."""
        return self._gpg_bytes("--armor", "--export", fpr).decode("ascii")

    def export_secret(self, fpr: str, passphrase: str | None = None) -> str:
        """ASCII-armored secret key, protected by the passphrase it was generated with."""
        return self._gpg_bytes(
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            passphrase or "",
            "--armor",
            "--export-secret-keys",
            fpr,
        ).decode("ascii")

    def import_keys(self, armored: str) -> list[str]:
        """Import keys (or a revocation certificate); return the fingerprints gpg reports."""
        out = self._gpg("--import", stdin=armored.encode("ascii"))
        return re.findall(r"^\[GNUPG:\] IMPORT_OK \d+ ([0-9A-F]{40})", out, re.MULTILINE)

    def revocation_certificate(self, fpr: str) -> str:
        """The revocation certificate gpg stored when it generated `fpr`, ready to import."""
        path = self.home / "openpgp-revocs.d" / f"{fpr}.rev"
        return _REV_GUARD.sub(r"\1", path.read_text(encoding="ascii"))

    def revoke(self, fpr: str) -> None:
        """Revoke `fpr` in this keyring; it can no longer sign, and its export is revoked."""
        self.import_keys(self.revocation_certificate(fpr))

    def export_revoked_public(self, fpr: str) -> str:
        """The public key as it looks once revoked, leaving this keyring able to sign with it.

        gpg refuses to sign with a revoked key, so tests that need "a message signed before
        the partner revoked the key" sign here and pin the output of this method.
        """
        with (
            tempfile.TemporaryDirectory(prefix="bbrev-") as scratch,
            GpgKeyring(Path(scratch), gpg_binary=self.gpg_binary) as other,
        ):
            other.import_keys(self.export_public(fpr))
            other.import_keys(self.revocation_certificate(fpr))
            return other.export_public(fpr)

    # -- messages ---------------------------------------------------------------------

    def encrypt_and_sign(
        self,
        plaintext: bytes | Path,
        *,
        recipient_fpr: str,
        signer_fpr: str | None,
        out: Path,
        armor: bool = False,
        compress_algo: CompressAlgo = "zlib",
        compress_level: int | None = None,
        mdc: bool = True,
        signer_passphrase: str | None = None,
        signed_at: datetime | None = None,
    ) -> Path:
        """Encrypt to `recipient_fpr` and (unless `signer_fpr` is None) sign, as `gpg -se` does.

        `plaintext` may be a Path: gpg then streams the file itself (use this for big inputs).
        `mdc=False` makes an old-style message without integrity protection (a Symmetrically
        Encrypted Data packet, tag 9) via gpg's `--rfc2440` compliance mode: gpg 2.2 still
        writes those, it only refuses to *decrypt* them.
        `signed_at` signs at a past time (--faked-system-time); every key involved must exist
        at that time, so create them with an earlier `created_at`.
        """
        args: list[str] = ["--trust-model", "always", "--yes", "--output", str(out)]
        args += ["--recipient", recipient_fpr]
        if not mdc:
            args.append("--rfc2440")
        if armor:
            args.append("--armor")
        if compress_algo == "none":
            args += ["--compress-algo", "none", "-z", "0"]
        else:
            args += ["--compress-algo", compress_algo]
            if compress_level is not None:
                args += ["-z", str(compress_level)]
        if signer_fpr is not None:
            # The trailing '!' forces exactly this key rather than a subkey gpg might pick.
            args += ["--local-user", f"{signer_fpr}!", "--pinentry-mode", "loopback"]
            args += ["--passphrase", signer_passphrase or "", "--sign"]
        args.append("--encrypt")
        if isinstance(plaintext, Path):
            self._gpg(*args, str(plaintext), faked_time=signed_at)
        else:
            self._gpg(*args, stdin=plaintext, faked_time=signed_at)
        return out

    # -- plumbing ---------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["GNUPGHOME"] = str(self.home)
        env.setdefault("LC_ALL", "C")
        return env

    def _gpg(
        self, *args: str, stdin: bytes | None = None, faked_time: datetime | None = None
    ) -> str:
        """Run gpg with status lines on stdout; return them as text."""
        return self._run(("--status-fd", "1", *args), stdin, faked_time).decode("utf-8", "replace")

    def _gpg_bytes(self, *args: str) -> bytes:
        return self._run(args, None, None)

    def _run(
        self, args: tuple[str, ...], stdin: bytes | None, faked_time: datetime | None
    ) -> bytes:
        cmd = [self.gpg_binary, "--homedir", str(self.home), "--batch", "--no-tty"]
        cmd += ["--no-auto-key-retrieve", "--disable-dirmngr"]
        if faked_time is not None:
            cmd += ["--faked-system-time", str(int(faked_time.timestamp()))]
        cmd += list(args)
        proc = subprocess.run(
            cmd,
            input=stdin if stdin is not None else b"",
            capture_output=True,
            env=self._env(),
            check=False,
        )
        if proc.returncode != 0:
            stderr = proc.stderr.decode("utf-8", "replace").strip()
            raise GpgCommandError(f"{' '.join(_redacted(cmd))} failed: {stderr}")
        return proc.stdout


def _redacted(cmd: list[str]) -> list[str]:
    """The command line with passphrase values masked, for error messages."""
    previous = ["", *cmd[:-1]]
    return [
        "***" if before == "--passphrase" else arg
        for before, arg in zip(previous, cmd, strict=True)
    ]


def flip_bit(src: Path, dst: Path, *, at_fraction: float = 0.5) -> Path:
    """Copy `src` to `dst` with one bit flipped at `at_fraction` of its length (tampering)."""
    data = bytearray(src.read_bytes())
    data[int(len(data) * at_fraction)] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


def truncate(src: Path, dst: Path, *, keep_fraction: float = 0.5) -> Path:
    """Copy the first `keep_fraction` of `src` to `dst` (an interrupted transfer)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep_fraction)])
    return dst


def gpg_available(gpg_binary: str = "gpg") -> bool:
    """True when the gpg binary can be run here."""
    return shutil.which(gpg_binary) is not None
