"""Parse gpg --status-fd lines and decide, from them alone, whether a decryption is trustworthy.

The keywords and their arguments are those of GnuPG's doc/DETAILS ("Format of the
--status-fd output"). gpg's exit code is not enough: it is 0 for a signature by an
expired or revoked key, and a message without MDC still streams its plaintext before
gpg 2.2 declares "decryption forced to fail". So the verdict below requires positive
evidence for every property we need and treats anything missing as a failure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from batchbridge.errors import ConfigError, DecryptError, IntegrityError, SignatureError

STATUS_PREFIX = "[GNUPG:] "

# ERRSIG's <rc> for "public key not found" (DETAILS: "a 9 indicates a missing public key").
_ERRSIG_NO_PUBKEY = "9"
_SIG_OUTCOMES = frozenset({"GOODSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "BADSIG", "ERRSIG"})
# gpg-error codes (libgpg-error err-codes.h): GPG_ERR_BAD_PASSPHRASE, GPG_ERR_NO_PASSPHRASE.
_PASSPHRASE_ERRORS = frozenset({11, 177})
_NODATA_MEANING = {
    "1": "no armored data",
    "2": "expected a packet but found none",
    "3": "invalid packet",
    "4": "signature expected but not found",
}


@dataclass(frozen=True, slots=True)
class StatusLine:
    """One '[GNUPG:] KEYWORD args…' line."""

    keyword: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GpgVerdict:
    """What a successful decryption proved: who signed and when."""

    signer_fingerprint: str
    signed_at: datetime | None


def parse_status(text: str | bytes) -> list[StatusLine]:
    """Split status output into lines; anything without the '[GNUPG:] ' prefix is ignored."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines: list[StatusLine] = []
    for raw in text.splitlines():
        if not raw.startswith(STATUS_PREFIX):
            continue
        parts = raw[len(STATUS_PREFIX) :].split(" ")
        if parts and parts[0]:
            lines.append(StatusLine(parts[0], tuple(part for part in parts[1:] if part)))
    return lines


def parse_gpg_time(value: str) -> datetime | None:
    """Status times are epoch seconds or ISO 8601 basic ('20240102T030405'); 0 means none."""
    if not value or value == "0":
        return None
    if "T" in value:
        return datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(value), tz=UTC)


def _first(lines: Sequence[StatusLine], keyword: str) -> StatusLine | None:
    return next((line for line in lines if line.keyword == keyword), None)


def _has(lines: Sequence[StatusLine], keyword: str) -> bool:
    return _first(lines, keyword) is not None


def _error_codes(lines: Sequence[StatusLine]) -> str:
    """ERROR/FAILURE locations and codes, e.g. 'decrypt.algorithm=33554445' (no user data)."""
    codes = [
        f"{line.args[0]}={line.args[1]}"
        for line in lines
        if line.keyword in {"ERROR", "FAILURE"} and len(line.args) >= 2
    ]
    return ", ".join(codes) or "none reported"


def split_signatures(lines: Sequence[StatusLine]) -> list[list[StatusLine]]:
    """Group the lines that belong to each signature (each starts at NEWSIG)."""
    groups: list[list[StatusLine]] = []
    current: list[StatusLine] | None = None
    for line in lines:
        if line.keyword == "NEWSIG":
            current = []
            groups.append(current)
        elif current is not None:
            current.append(line)
        elif line.keyword in _SIG_OUTCOMES:
            # Old gpg versions emit no NEWSIG; the outcome line then opens the group.
            current = [line]
            groups.append(current)
    return [group for group in groups if any(line.keyword in _SIG_OUTCOMES for line in group)]


def _gpg_error_code(value: str) -> int | None:
    """The gpg-error code of an ERROR/FAILURE argument ('67108875' or '67108875_Bad…')."""
    digits = value.split("_", 1)[0]
    return int(digits) & 0xFFFF if digits.isdigit() else None


def _passphrase_problem(lines: Sequence[StatusLine]) -> bool:
    if _has(lines, "BAD_PASSPHRASE") or _has(lines, "MISSING_PASSPHRASE"):
        return True
    if _has(lines, "NEED_PASSPHRASE") and not _has(lines, "DECRYPTION_KEY"):
        return True
    return any(
        line.keyword == "ERROR"
        and len(line.args) >= 2
        and line.args[0] == "pkdecrypt_failed"
        and _gpg_error_code(line.args[1]) in _PASSPHRASE_ERRORS
        for line in lines
    )


def check_decryption(lines: Sequence[StatusLine]) -> None:
    """Raise unless the message was decrypted with our key and its integrity was proven."""
    nodata = _first(lines, "NODATA")
    if nodata is not None and not _has(lines, "BEGIN_DECRYPTION"):
        meaning = _NODATA_MEANING.get(nodata.args[0] if nodata.args else "", "no data")
        raise DecryptError(f"not an OpenPGP message ({meaning})", reason="not_openpgp")
    if _has(lines, "BADARMOR"):
        raise IntegrityError("the ASCII armor is corrupt", reason="bad_armor")
    info = _first(lines, "DECRYPTION_INFO")
    if info is not None and info.args:
        mdc_method = info.args[0]
        aead_algo = info.args[2] if len(info.args) >= 3 else "0"
        # gpg 2.2 refuses these itself ("decryption forced to fail"), but only after it has
        # streamed the plaintext; this check makes the reason explicit and version-proof.
        if mdc_method == "0" and aead_algo == "0":
            raise IntegrityError(
                "message is not integrity protected (no MDC); ask the partner to use a "
                "current OpenPGP tool",
                reason="no_mdc",
            )
    if _passphrase_problem(lines):
        # Not the file's fault: every file of this feed will fail until the config is fixed.
        raise ConfigError(
            "our private key's passphrase is missing or was rejected", reason="passphrase_rejected"
        )
    if not _has(lines, "DECRYPTION_KEY"):
        recipients = [line.args[0] for line in lines if line.keyword == "ENC_TO" and line.args]
        if recipients or _has(lines, "NO_SECKEY"):
            raise DecryptError(
                f"message is encrypted to key id(s) {', '.join(recipients) or 'unknown'}, "
                "none of which is our private key",
                reason="wrong_recipient",
            )
        if _has(lines, "NEED_PASSPHRASE_SYM") or _has(lines, "BEGIN_DECRYPTION"):
            # Only a passphrase-encrypted (symmetric) message decrypts without a public-key
            # recipient; we accept nothing but messages encrypted to our key.
            raise DecryptError(
                "message is not encrypted to our private key (symmetric encryption)",
                reason="wrong_recipient",
            )
        if _has(lines, "PLAINTEXT"):
            raise DecryptError("message is not encrypted", reason="not_encrypted")
        raise DecryptError(
            f"gpg could not decrypt the message (errors: {_error_codes(lines)})",
            reason="decrypt_failed",
        )
    if _has(lines, "BADMDC"):
        raise IntegrityError(
            "integrity check (MDC) failed: the file was modified or truncated", reason="bad_mdc"
        )
    if not _has(lines, "DECRYPTION_OKAY") or _has(lines, "DECRYPTION_FAILED"):
        # gpg stops before DECRYPTION_OKAY when a signature is bad (BADSIG, then FAILURE);
        # that is the actionable reason, so let the signature check name it.
        bad = _first(lines, "BADSIG")
        if bad is not None:
            keyid = bad.args[0] if bad.args else "unknown"
            raise SignatureError(
                f"bad signature by key id {keyid} (the file may have been altered)",
                reason="bad_signature",
            )
        raise IntegrityError(
            f"decryption failed: the ciphertext is corrupt (errors: {_error_codes(lines)})",
            reason="corrupt",
        )


def check_signatures(
    lines: Sequence[StatusLine], pinned_fingerprints: Collection[str]
) -> GpgVerdict:
    """Require at least one signature, and every signature good and by a pinned key."""
    pinned = {fpr.upper() for fpr in pinned_fingerprints}
    groups = split_signatures(lines)
    if not groups:
        raise SignatureError("message is not signed", reason="unsigned")
    verdict: GpgVerdict | None = None
    for group in groups:
        outcome = next(line for line in group if line.keyword in _SIG_OUTCOMES)
        keyid = outcome.args[0] if outcome.args else "unknown"
        if outcome.keyword == "ERRSIG":
            rc = outcome.args[5] if len(outcome.args) >= 6 else ""
            if rc == _ERRSIG_NO_PUBKEY:
                raise SignatureError(
                    f"signed by key id {keyid}, which is not a pinned partner key",
                    reason="wrong_signer",
                )
            raise SignatureError(
                f"signature by key id {keyid} cannot be checked (gpg rc {rc or '?'})",
                reason="signature_unverifiable",
            )
        if outcome.keyword == "BADSIG":
            raise SignatureError(
                f"bad signature by key id {keyid} (the file may have been altered)",
                reason="bad_signature",
            )
        if outcome.keyword == "REVKEYSIG":
            raise SignatureError(
                f"signed by key id {keyid}, which has been revoked", reason="signer_revoked"
            )
        if outcome.keyword == "EXPKEYSIG":
            raise SignatureError(
                f"signed by key id {keyid}, which has expired", reason="signer_expired"
            )
        if outcome.keyword == "EXPSIG":
            raise SignatureError(
                f"signature by key id {keyid} has expired", reason="signature_expired"
            )
        valid = _first(group, "VALIDSIG")
        if valid is None or len(valid.args) < 3:
            raise SignatureError(
                f"gpg reported a good signature by key id {keyid} without VALIDSIG",
                reason="bad_signature",
            )
        # The 10th argument is the primary key's fingerprint (the signature may be by a subkey).
        primary = valid.args[9] if len(valid.args) >= 10 else valid.args[0]
        if primary.upper() not in pinned:
            raise SignatureError(
                f"signed by key {primary}, which is not a pinned partner key",
                reason="wrong_signer",
            )
        if verdict is None:
            verdict = GpgVerdict(primary.upper(), parse_gpg_time(valid.args[2]))
    if verdict is None:  # unreachable: every group either raised or set it
        raise SignatureError("no signature could be checked", reason="unsigned")
    return verdict


def evaluate(
    lines: Iterable[StatusLine], *, pinned_fingerprints: Collection[str], returncode: int
) -> GpgVerdict:
    """The whole decision: decryption + integrity first, then signatures, then the exit code."""
    seq = list(lines)
    check_decryption(seq)
    verdict = check_signatures(seq, pinned_fingerprints)
    if returncode != 0:
        raise DecryptError(
            f"gpg exited with status {returncode} (errors: {_error_codes(seq)})",
            reason="gpg_failed",
        )
    return verdict
