"""Hostile OpenPGP files, both engines: refused with a reason or read exactly; bounded memory."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import subprocess
import sys
import traceback
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pgpy
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pgpy.constants import SymmetricKeyAlgorithm
from pgpy.packet.packets import IntegrityProtectedSKEDataV1, PKESessionKeyV3

from batchbridge.connectors.pgp.base import Decryptor, DecryptorKeys, DecryptorLimits
from batchbridge.connectors.pgp.gnupg import GnuPGDecryptor
from batchbridge.connectors.pgp.pgpy_engine import PGPyDecryptor
from batchbridge.errors import DecryptError
from tests.plugins.gpg import CANARY, GpgTestKeys, lab_plaintext
from tests.reliability.conftest import FULL, RANDOM_IN_OTHER_THREADS, Figures, hostile_settings
from tests.reliability.hostile_harness import hostile_call

pytestmark = pytest.mark.integration

EngineFactory = Callable[[DecryptorKeys, DecryptorLimits], Decryptor]
ENGINES: dict[str, EngineFactory] = {"gnupg": GnuPGDecryptor, "pgpy": PGPyDecryptor}
LIMITS = DecryptorLimits(max_plaintext_bytes=64 * 1024**2, max_compression_ratio=200.0)
PLAINTEXT = lab_plaintext(300, seed=21)
# gpg writes the input file's name into the literal packet: a name can be sensitive too.
NAME_CANARY = "NAMECANARYQUIXOTE"
REASON = re.compile(r"^[a-z_]+$")
MIB = 1024**2
# The bound the brief sets for a bomb: peak memory over the process's own baseline.
BOMB_MEMORY_BOUND = 200 * MIB


@pytest.fixture(params=sorted(ENGINES))
def engine_name(request: pytest.FixtureRequest) -> str:
    """Each test runs once per engine."""
    name: str = request.param
    return name


@pytest.fixture
def decryptor(engine_name: str, gpg_keys: GpgTestKeys) -> Decryptor:
    return ENGINES[engine_name](gpg_keys.decryptor_keys(), LIMITS)


@dataclass(frozen=True)
class Messages:
    """Good messages made once per module by the real gpg binary, plus hostile relatives."""

    folder: Path
    binary: Path
    armored: Path
    uncompressed: Path


@pytest.fixture(scope="module")
def messages(gpg_keys: GpgTestKeys, tmp_path_factory: pytest.TempPathFactory) -> Messages:
    folder = tmp_path_factory.mktemp("hostile-pgp")
    source = folder / f"{NAME_CANARY}.csv"
    source.write_bytes(PLAINTEXT)

    def make(name: str, **options: object) -> Path:
        return gpg_keys.keyring.encrypt_and_sign(
            source,
            recipient_fpr=gpg_keys.our_fpr,
            signer_fpr=gpg_keys.partner_fpr,
            out=folder / name,
            **options,  # type: ignore[arg-type]
        )

    return Messages(
        folder=folder,
        binary=make("good.pgp"),
        armored=make("good.asc", armor=True),
        uncompressed=make("plain.pgp", compress_algo="none"),
    )


class Attempts:
    """Runs one decryptor over hostile files and checks each answer; counts them."""

    def __init__(self, decryptor: Decryptor, gpg_keys: GpgTestKeys, figures: Figures) -> None:
        self.decryptor = decryptor
        self.partner = gpg_keys.partner_fpr
        self.figures = figures
        self.reasons: dict[str, int] = {}

    def run(self, path: Path, original: bytes | None = PLAINTEXT) -> DecryptError | None:
        """None when the file was accepted (then it must be exactly `original`)."""
        result = hostile_call(
            self.figures,
            lambda: self.decryptor.decrypt_and_verify(path),
            DecryptError,
            check_refusal,
            subject=path.name,
        )
        if isinstance(result, DecryptError):
            self.reasons[result.reason] = self.reasons.get(result.reason, 0) + 1
            return result
        # A damaged file may only ever be accepted when the damage changed nothing that
        # counts (an armor checksum, a comment line): the plaintext and signer are exact.
        assert original is not None, f"{path.name} was accepted"
        assert result.data == original, f"{path.name}: accepted with different plaintext"
        assert result.signer_fingerprint == self.partner
        return None

    def bytes(self, data: bytes, folder: Path, name: str) -> DecryptError | None:
        path = folder / name
        path.write_bytes(data)
        try:
            return self.run(path)
        finally:
            path.unlink()


def check_refusal(exc: DecryptError) -> None:
    """A refusal has a reason code and a short message without plaintext or file names inside."""
    text = "".join(traceback.format_exception(exc))
    for secret in (CANARY, NAME_CANARY):
        assert secret not in text
    assert REASON.match(exc.reason), exc.reason
    message = str(exc)
    assert message.isprintable() and len(message) < 600, message[:300]


def spread(length: int, count: int) -> list[int]:
    """`count` offsets spread over [1, length), plus the first and last few bytes."""
    edges = [1, 2, 3, 5, 8, 13, 21, length - 2, length - 1]
    step = max(1, length // count)
    return sorted({o for o in [*edges, *range(1, length, step)] if 0 < o < length})


# -- truncation and bit flips at many offsets ---------------------------------------------

CUTS = 150 if FULL else 16
FLIPS = 300 if FULL else 16


@pytest.mark.parametrize("form", ["binary", "armored", "uncompressed"])
def test_truncated_at_many_offsets_is_refused(
    decryptor: Decryptor,
    gpg_keys: GpgTestKeys,
    messages: Messages,
    reliability_figures: Figures,
    tmp_path: Path,
    form: str,
) -> None:
    good = getattr(messages, form).read_bytes()
    attempts = Attempts(decryptor, gpg_keys, reliability_figures)
    accepted = []
    for offset in spread(len(good), CUTS):
        if attempts.bytes(good[:offset], tmp_path, f"cut-{offset}.pgp") is None:
            accepted.append(offset)
    if form == "armored":
        # Only the END line can go without losing anything (gpg reads on without it; the
        # pgpy engine calls that truncated): the data and its MDC are complete before it.
        end = good.index(b"-----END")
        assert all(offset >= end for offset in accepted), (end, accepted)
    else:
        assert accepted == []
        # A cut-off binary file says so, wherever it was cut.
        assert set(attempts.reasons) == {"truncated"}, attempts.reasons


@pytest.mark.parametrize("form", ["binary", "armored", "uncompressed"])
def test_bit_flips_at_many_offsets_are_refused(
    decryptor: Decryptor,
    gpg_keys: GpgTestKeys,
    messages: Messages,
    reliability_figures: Figures,
    tmp_path: Path,
    form: str,
) -> None:
    good = getattr(messages, form).read_bytes()
    attempts = Attempts(decryptor, gpg_keys, reliability_figures)
    rng = random.Random(len(good))
    accepted = []
    for offset in spread(len(good), FLIPS):
        data = bytearray(good)
        data[offset] ^= 1 << rng.randrange(8)
        if attempts.bytes(bytes(data), tmp_path, f"flip-{offset}.pgp") is None:
            accepted.append(offset)
    if form != "armored":
        # Every byte after the session key packet is MDC-covered. Inside that packet a few
        # bits change nothing (the low bits of an MPI's bit count): Attempts checked that
        # the plaintext and signer came out exact.
        session_key_end = 2 + good[1]  # gpg writes it as an old-format packet, 1-octet length
        assert good[0] == 0x84 and all(offset < session_key_end for offset in accepted), accepted


# -- integrity, recipients, signers -----------------------------------------------------------


def gpg_made(gpg_keys: GpgTestKeys, folder: Path, name: str, *args: str) -> Path:
    """Run the partner-side gpg with `args` over the plaintext, writing `name`."""
    out = folder / name
    gpg_keys.keyring._gpg("--yes", "--output", str(out), *args, stdin=PLAINTEXT)
    return out


def sign_as(fpr: str) -> tuple[str, ...]:
    return ("--local-user", f"{fpr}!", "--pinentry-mode", "loopback", "--passphrase", "")


@dataclass(frozen=True)
class Case:
    """A hostile file, the key(s) pinned when it is read, and the reasons that may refuse it."""

    make: Callable[[GpgTestKeys, Messages], Path]
    reasons: frozenset[str]
    pinned: str = "partner"


def _message(gpg_keys: GpgTestKeys, messages: Messages, name: str, **options: object) -> Path:
    return gpg_keys.keyring.encrypt_and_sign(
        PLAINTEXT,
        recipient_fpr=gpg_keys.our_fpr,
        signer_fpr=gpg_keys.partner_fpr,
        out=messages.folder / name,
        **options,  # type: ignore[arg-type]
    )


def _no_mdc_truncated(gpg_keys: GpgTestKeys, messages: Messages) -> Path:
    path = _message(gpg_keys, messages, "nomdc-full.pgp", mdc=False, compress_algo="none")
    cut = messages.folder / "nomdc-cut.pgp"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    return cut


def _two_recipients_not_us(gpg_keys: GpgTestKeys, messages: Messages) -> Path:
    return gpg_made(
        gpg_keys,
        messages.folder,
        "two-strangers.pgp",
        "--trust-model",
        "always",
        "--recipient",
        gpg_keys.stranger_fpr,
        "--recipient",
        gpg_keys.partner_fpr,
        *sign_as(gpg_keys.partner_fpr),
        "--sign",
        "--encrypt",
    )


def _concatenated(gpg_keys: GpgTestKeys, messages: Messages) -> Path:
    # Two whole messages in one file: taking the first and dropping the second would lose rows.
    path = messages.folder / "two-messages.pgp"
    path.write_bytes(messages.binary.read_bytes() * 2)
    return path


def _good_then_garbage(gpg_keys: GpgTestKeys, messages: Messages) -> Path:
    path = messages.folder / "trailing-garbage.pgp"
    path.write_bytes(messages.binary.read_bytes() + CANARY.encode() * 3)
    return path


def _expired(gpg_keys: GpgTestKeys, messages: Messages) -> Path:
    # Signed while the key was still valid: only its expiry since then refuses it.
    return gpg_keys.keyring.encrypt_and_sign(
        PLAINTEXT,
        recipient_fpr=gpg_keys.our_fpr,
        signer_fpr=gpg_keys.expired_fpr,
        out=messages.folder / "expired.pgp",
        compress_algo="none",
        signed_at=datetime.now(UTC) - timedelta(days=9.5),
    )


def _public_key_block(gpg_keys: GpgTestKeys, messages: Messages) -> Path:
    path = messages.folder / "a-key.asc"
    path.write_text(gpg_keys.partner_public, encoding="ascii")
    return path


CASES: dict[str, Case] = {
    "no-mdc-uncompressed": Case(
        lambda k, m: _message(k, m, "nomdc-plain.pgp", mdc=False, compress_algo="none"),
        frozenset({"no_mdc"}),
    ),
    "no-mdc-bzip2-armored": Case(
        lambda k, m: _message(k, m, "nomdc.asc", mdc=False, compress_algo="bzip2", armor=True),
        frozenset({"no_mdc"}),
    ),
    "no-mdc-and-truncated": Case(_no_mdc_truncated, frozenset({"no_mdc", "truncated"})),
    "wrong-recipient-armored": Case(
        lambda k, m: k.keyring.encrypt_and_sign(
            PLAINTEXT,
            recipient_fpr=k.stranger_fpr,
            signer_fpr=k.partner_fpr,
            out=m.folder / "stranger.asc",
            armor=True,
        ),
        frozenset({"wrong_recipient"}),
    ),
    "two-recipients-neither-us": Case(_two_recipients_not_us, frozenset({"wrong_recipient"})),
    "symmetric-only-signed": Case(
        lambda k, m: gpg_made(
            k,
            m.folder,
            "symmetric.pgp",
            *sign_as(k.partner_fpr)[:-2],
            "--passphrase",
            "not-our-passphrase",
            "--sign",
            "--symmetric",
        ),
        frozenset({"wrong_recipient"}),
    ),
    "signed-not-encrypted": Case(
        lambda k, m: gpg_made(k, m.folder, "signed.pgp", *sign_as(k.partner_fpr), "--sign"),
        frozenset({"not_encrypted", "not_openpgp"}),
    ),
    "clearsigned": Case(
        lambda k, m: gpg_made(k, m.folder, "clear.asc", *sign_as(k.partner_fpr), "--clearsign"),
        frozenset({"not_encrypted", "not_openpgp"}),
    ),
    "detached-signature": Case(
        lambda k, m: gpg_made(
            k, m.folder, "detached.sig", *sign_as(k.partner_fpr), "--detach-sign"
        ),
        # gpg says only that it could not decrypt a file holding no encrypted message.
        frozenset({"not_encrypted", "not_openpgp", "decrypt_failed"}),
    ),
    "public-key-block": Case(
        _public_key_block, frozenset({"not_encrypted", "not_openpgp", "decrypt_failed"})
    ),
    # gpg decrypts on into the second message and fails its MDC; pgpy refuses the layout.
    "two-messages-concatenated": Case(
        _concatenated, frozenset({"bad_mdc", "unexpected_structure"})
    ),
    "message-then-garbage": Case(
        _good_then_garbage, frozenset({"bad_mdc", "unexpected_structure", "not_openpgp"})
    ),
    "expired-signer-uncompressed": Case(_expired, frozenset({"signer_expired"}), "expired"),
    "revoked-signer-armored-bzip2": Case(
        lambda k, m: k.keyring.encrypt_and_sign(
            PLAINTEXT,
            recipient_fpr=k.our_fpr,
            signer_fpr=k.revoked_fpr,
            out=m.folder / "revoked.asc",
            armor=True,
            compress_algo="bzip2",
        ),
        frozenset({"signer_revoked"}),
        "revoked",
    ),
    "signed-by-partner-and-stranger": Case(
        lambda k, m: gpg_made(
            k,
            m.folder,
            "two-signers.pgp",
            "--trust-model",
            "always",
            "--recipient",
            k.our_fpr,
            *sign_as(k.partner_fpr),
            "--local-user",
            f"{k.stranger_fpr}!",
            "--sign",
            "--encrypt",
        ),
        frozenset({"wrong_signer"}),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_untrusted_message_is_refused_with_its_reason(
    engine_name: str,
    gpg_keys: GpgTestKeys,
    messages: Messages,
    reliability_figures: Figures,
    case: str,
) -> None:
    spec = CASES[case]
    pinned = {
        "partner": gpg_keys.partner_public,
        "expired": gpg_keys.expired_public,
        "revoked": gpg_keys.revoked_public,
    }[spec.pinned]
    decryptor = ENGINES[engine_name](gpg_keys.decryptor_keys(pinned), LIMITS)
    attempts = Attempts(decryptor, gpg_keys, reliability_figures)
    refused = attempts.run(spec.make(gpg_keys, messages), original=None)
    assert refused is not None
    assert refused.reason in spec.reasons, f"{refused.reason}: {refused}"


# -- ASCII armor damage --------------------------------------------------------------------


def armor_lines(messages: Messages) -> list[str]:
    return messages.armored.read_text(encoding="ascii").splitlines()


def _with_lines(lines: list[str], newline: str = "\n") -> bytes:
    return (newline.join(lines) + newline).encode("utf-8")


def _body_range(lines: list[str]) -> tuple[int, int]:
    """(first base64 line, the CRC line) of an armored message."""
    first = lines.index("") + 1
    crc = next(i for i, line in enumerate(lines) if line.startswith("="))
    return first, crc


def _edit_first_body_line(lines: list[str], edit: Callable[[str], str]) -> bytes:
    first = _body_range(lines)[0]
    return _with_lines([*lines[:first], edit(lines[first]), *lines[first + 1 :]])


ARMOR_DAMAGE: dict[str, Callable[[list[str]], bytes]] = {
    "bad-crc": lambda ls: _with_lines([*ls[:-2], "=AAAA", ls[-1]]),
    "crc-missing": lambda ls: _with_lines([*ls[:-2], ls[-1]]),
    "footer-missing": lambda ls: _with_lines(ls[:-1]),
    "footer-and-crc-missing": lambda ls: _with_lines(ls[:-2]),
    "garbage-line-in-body": lambda ls: _with_lines(
        [*ls[: _body_range(ls)[0] + 1], "!!" + CANARY + "!!", *ls[_body_range(ls)[0] + 1 :]]
    ),
    "line-dropped-from-body": lambda ls: _with_lines(
        [*ls[: _body_range(ls)[0] + 1], *ls[_body_range(ls)[0] + 2 :]]
    ),
    "body-lines-swapped": lambda ls: _with_lines(
        [
            *ls[: _body_range(ls)[0]],
            ls[_body_range(ls)[0] + 1],
            ls[_body_range(ls)[0]],
            *ls[_body_range(ls)[0] + 2 :],
        ]
    ),
    "wrong-header-signature": lambda ls: _with_lines(
        ["-----BEGIN PGP SIGNATURE-----", *ls[1:-1], "-----END PGP SIGNATURE-----"]
    ),
    "wrong-header-key-block": lambda ls: _with_lines(
        ["-----BEGIN PGP PUBLIC KEY BLOCK-----", *ls[1:-1], "-----END PGP PUBLIC KEY BLOCK-----"]
    ),
    "header-and-footer-only": lambda ls: _with_lines([ls[0], "", ls[-1]]),
    "footer-before-header": lambda ls: _with_lines([ls[-1], *ls[:-1]]),
    "non-ascii-in-body": lambda ls: _edit_first_body_line(ls, lambda x: x[:10] + "é" + x[10:]),
    "nul-in-body": lambda ls: _edit_first_body_line(ls, lambda x: "\x00" + x),
    "body-joined-to-one-line": lambda ls: _with_lines(
        [
            *ls[: _body_range(ls)[0]],
            "".join(ls[_body_range(ls)[0] : _body_range(ls)[1]]),
            *ls[_body_range(ls)[1] :],
        ]
    ),
    "crlf-line-ends": lambda ls: _with_lines(ls, "\r\n"),
    "extra-armor-headers": lambda ls: _with_lines(
        [ls[0], "Comment: " + CANARY, "Version: 0.0 " + CANARY, *ls[1:]]
    ),
    "text-around-the-armor": lambda ls: _with_lines(
        ["Dear team, results for " + CANARY + " below.", "", *ls, "", "Regards"]
    ),
    "two-armored-blocks": lambda ls: _with_lines([*ls, *ls]),
}


@pytest.mark.parametrize("damage", sorted(ARMOR_DAMAGE))
def test_damaged_armor_is_refused_or_read_exactly(
    decryptor: Decryptor,
    gpg_keys: GpgTestKeys,
    messages: Messages,
    reliability_figures: Figures,
    tmp_path: Path,
    damage: str,
) -> None:
    data = ARMOR_DAMAGE[damage](armor_lines(messages))
    refused = Attempts(decryptor, gpg_keys, reliability_figures).bytes(data, tmp_path, "x.asc")
    # Either engine may read past cosmetic damage (gpg ignores the armor's label and a
    # missing END line; pgpy ignores the CRC): Attempts then checked the exact plaintext.
    # What it refuses, it refuses for the right reason.
    if refused is not None and damage.startswith(("footer-missing", "footer-and-crc")):
        assert refused.reason == "truncated", refused
    if damage in {"header-and-footer-only", "line-dropped-from-body", "body-lines-swapped"}:
        assert refused is not None


# -- random bytes ------------------------------------------------------------------------------


def random_blobs(messages: Messages, count: int) -> Iterator[tuple[str, bytes]]:
    """Seeded random files: plain noise, noise behind real headers, noise in real framing."""
    rng = random.Random(7)
    good = messages.binary.read_bytes()
    # The real first packet (the session key for us), then noise where the data should be.
    pkesk_end = 2 + good[1] if good[0] & 0x40 and good[1] < 192 else 64
    for index in range(count):
        size = rng.choice([1, 2, 7, 64, 500, 4096, 70_000])
        noise = rng.randbytes(size)
        kind = index % 5
        if kind == 0:
            yield f"noise-{index}", noise
        elif kind == 1:
            yield f"pkesk-then-noise-{index}", good[:pkesk_end] + noise
        elif kind == 2:
            # A SEIPD header (tag 18, new format, 5-octet length) claiming the noise's size.
            yield (
                f"seipd-noise-{index}",
                good[:pkesk_end] + b"\xd2\xff" + size.to_bytes(4, "big") + noise,
            )
        elif kind == 3:
            yield (
                f"armored-noise-{index}",
                (
                    b"-----BEGIN PGP MESSAGE-----\n\n"
                    + base64.encodebytes(noise)
                    + b"-----END PGP MESSAGE-----\n"
                ),
            )
        else:
            # A huge claimed length with little behind it.
            yield f"claims-4gb-{index}", b"\xd2\xff\xff\xff\xff\xf0" + noise


RANDOM_FILES = 400 if FULL else 25


def test_random_bytes_are_refused(
    decryptor: Decryptor,
    gpg_keys: GpgTestKeys,
    messages: Messages,
    reliability_figures: Figures,
    tmp_path: Path,
) -> None:
    attempts = Attempts(decryptor, gpg_keys, reliability_figures)
    for name, data in random_blobs(messages, RANDOM_FILES):
        assert attempts.bytes(data, tmp_path, name) is not None, name


@pytest.fixture(scope="module")
def pgpy_engine(gpg_keys: GpgTestKeys) -> PGPyDecryptor:
    return PGPyDecryptor(gpg_keys.decryptor_keys(), LIMITS)


@pytest.fixture(scope="module")
def good_binary(messages: Messages) -> bytes:
    return messages.binary.read_bytes()


@RANDOM_IN_OTHER_THREADS
@hostile_settings(quick=150, full=2000)
@given(
    edits=st.lists(
        st.tuples(
            st.floats(0, 1, exclude_max=True), st.binary(min_size=0, max_size=6), st.integers(0, 8)
        ),
        min_size=1,
        max_size=4,
    )
)
def test_pgpy_engine_on_generated_edits_of_a_good_message(
    edits: list[tuple[float, bytes, int]],
    pgpy_engine: PGPyDecryptor,
    gpg_keys: GpgTestKeys,
    good_binary: bytes,
    messages: Messages,
    reliability_figures: Figures,
) -> None:
    # In-process and fast, so the pure-Python framing code gets thousands of mutants.
    data = bytearray(good_binary)
    for where, insert, delete in edits:
        at = int(where * len(data))
        data[at : at + delete] = insert
    attempts = Attempts(pgpy_engine, gpg_keys, reliability_figures)
    attempts.bytes(bytes(data), messages.folder, f"edit-{os.getpid()}.pgp")


# -- compression bombs ---------------------------------------------------------------------


def _packet(tag: int, body: bytes) -> bytes:
    """A new-format packet with a definite length (RFC 4880 §4.2.2)."""
    return bytes([0xC0 | tag]) + b"\xff" + len(body).to_bytes(4, "big") + body


def deflate_zeros(total: int) -> bytes:
    """Raw deflate of a literal packet holding about `total` zero bytes, built in milliseconds.

    Each 16 MiB run of zeros is compressed once and ended with a full flush, which resets
    the compressor: the same bytes then stand for every further run (pigz does the same).
    The literal packet uses partial body lengths (RFC 4880 4.2.2.4): a first chunk of 512
    octets holding the literal's own fields, then chunks of 2**30, so it may pass 4 GiB.
    """
    run = 16 * MIB
    per_part = 2**30 // run

    def block(data: bytes) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)

    # Tag 11 (new format), first chunk 2**9 octets: binary, no file name, date 0, zeros.
    first = b"\xcb\xe9" + b"b\x00\x00\x00\x00\x00" + bytes(512 - 6)
    zeros = block(bytes(run))
    parts = total // 2**30
    out = [block(first + b"\xfe")]  # then a chunk of 2**30
    for part in range(parts):
        out.append(zeros * per_part)
        # Another 2**30 follows, or the end: a last chunk of definite length 0.
        out.append(block(b"\xfe" if part < parts - 1 else b"\x00"))
    finish = zlib.compressobj(9, zlib.DEFLATED, -15)
    out.append(finish.compress(b"") + finish.flush())
    return b"".join(out)


def envelope(gpg_keys: GpgTestKeys, inner: bytes, out: Path) -> Path:
    """Encrypt a packet stream to our key in a SEIPD packet (MDC), as any tool would."""
    ours, _ = pgpy.PGPKey.from_blob(gpg_keys.keyring.export_public(gpg_keys.our_fpr))
    subkey = next(iter(ours.subkeys.values()))
    session_key = os.urandom(32)
    pkesk = PKESessionKeyV3()
    pkesk.encrypter = bytearray.fromhex(subkey.fingerprint.keyid)
    pkesk.pkalg = subkey.key_algorithm
    pkesk.encrypt_sk(subkey._key, SymmetricKeyAlgorithm.AES256, session_key)
    seipd = IntegrityProtectedSKEDataV1()
    seipd.encrypt(session_key, SymmetricKeyAlgorithm.AES256, inner)
    out.write_bytes(bytes(pkesk.__bytearray__()) + bytes(seipd.__bytearray__()))
    return out


BOMB_GIB = 8 if FULL else 4


@pytest.fixture(scope="module")
def bombs(gpg_keys: GpgTestKeys, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bombs that would expand to several GiB: one-level deflate, and deflate in zlib."""
    folder = tmp_path_factory.mktemp("bombs")
    inner = deflate_zeros(BOMB_GIB * 2**30)
    zip_bomb = _packet(8, b"\x01" + inner)  # algorithm 1: raw deflate
    nested = _packet(8, b"\x02" + zlib.compress(zip_bomb, 9))
    made = {
        "zip": envelope(gpg_keys, zip_bomb, folder / "zip-bomb.pgp"),
        "nested": envelope(gpg_keys, nested, folder / "nested-bomb.pgp"),
    }
    if FULL:
        # The same made by gpg itself from a sparse multi-GiB file (slow: bzip2 of 2 GiB).
        zeros = folder / "zeros.bin"
        with zeros.open("wb") as handle:
            handle.truncate(2 * 2**30)
        made["gpg-bzip2"] = gpg_keys.keyring.encrypt_and_sign(
            zeros,
            recipient_fpr=gpg_keys.our_fpr,
            signer_fpr=gpg_keys.partner_fpr,
            out=folder / "gpg-bzip2-bomb.pgp",
            compress_algo="bzip2",
            compress_level=9,
        )
        zeros.unlink()
    return made


MEASURE = """
import json, subprocess, sys, threading, time
from pathlib import Path
from pydantic import SecretStr
from batchbridge.connectors.pgp.base import DecryptorKeys, DecryptorLimits
from batchbridge.connectors.pgp.gnupg import GnuPGDecryptor
from batchbridge.connectors.pgp.pgpy_engine import PGPyDecryptor
from batchbridge.errors import BatchbridgeError


def status_kib(pid, field):
    # VmHWM is the peak resident size since exec (or since clear_refs reset it).
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


gpg_peak = [0]
real_popen = subprocess.Popen


class WatchedPopen(real_popen):
    # Samples each child's VmHWM until it exits: getrusage would report the RSS this
    # (forking) Python process had, which the kernel carries over into the child.
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        while self.poll() is None:
            kib = status_kib(self.pid, "VmHWM")
            if kib:
                gpg_peak[0] = max(gpg_peak[0], kib)
            time.sleep(0.002)


subprocess.Popen = WatchedPopen
args = json.loads(sys.stdin.read())
keys = DecryptorKeys(
    private_key=SecretStr(args["secret"]),
    passphrase=SecretStr(args["passphrase"]),
    partner_public_keys=(args["public"],),
)
engine = {"gnupg": GnuPGDecryptor, "pgpy": PGPyDecryptor}[args["engine"]]
decryptor = engine(keys, DecryptorLimits(**args["limits"]))
# Restart the high-water mark here, so imports and key loading do not count.
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
baseline = status_kib("self", "VmRSS")
outcome = {"error": None, "reason": None}
try:
    decryptor.decrypt_and_verify(Path(args["path"]))
except BatchbridgeError as exc:
    outcome = {"error": type(exc).__name__, "reason": exc.reason}
outcome["baseline_kib"] = baseline
outcome["peak_kib"] = status_kib("self", "VmHWM")
outcome["children_kib"] = gpg_peak[0]
print(json.dumps(outcome))
"""


def measure_in_subprocess(
    engine_name: str, gpg_keys: GpgTestKeys, path: Path, limits: DecryptorLimits
) -> dict[str, object]:
    """Decrypt in a fresh Python process; return the outcome and peak RSS (self, gpg)."""
    args = {
        "engine": engine_name,
        "secret": gpg_keys.our_secret,
        "passphrase": gpg_keys.our_passphrase,
        "public": gpg_keys.partner_public,
        "limits": {
            "max_plaintext_bytes": limits.max_plaintext_bytes,
            "max_compression_ratio": limits.max_compression_ratio,
        },
        "path": str(path),
    }
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE],
        input=json.dumps(args).encode(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    result: dict[str, object] = json.loads(proc.stdout)
    return result


BOMB_CASES = [
    # One level of deflate tops out near 1000:1, so its ciphertext is a few MiB and the
    # ratio cap alone would allow ~1 GiB: the absolute plaintext cap (64 MiB) stops it.
    ("zip", LIMITS, "plaintext_too_large"),
    # Deflate inside deflate: a few KiB that would become GiBs; the default caps stop it.
    ("nested", DecryptorLimits(), None),
]
if FULL:
    BOMB_CASES.append(("gpg-bzip2", DecryptorLimits(), "compression_ratio"))


@pytest.mark.parametrize(
    ("bomb", "limits", "reason"), BOMB_CASES, ids=[b for b, _, _ in BOMB_CASES]
)
def test_compression_bomb_is_stopped_with_bounded_memory(
    engine_name: str,
    gpg_keys: GpgTestKeys,
    bombs: dict[str, Path],
    reliability_figures: Figures,
    bomb: str,
    limits: DecryptorLimits,
    reason: str | None,
) -> None:
    path = bombs[bomb]
    reliability_figures.add("hostile_inputs")
    outcome = measure_in_subprocess(engine_name, gpg_keys, path, limits)
    assert outcome["error"] in {"PlaintextLimitError", "DecryptError"}, outcome
    if reason is not None:
        assert outcome["reason"] == reason, outcome
    else:
        assert outcome["reason"] in {"compression_ratio", "nested_compression"}, outcome
    peak = (int(outcome["peak_kib"]) - int(outcome["baseline_kib"])) * 1024  # type: ignore[call-overload]
    gpg_peak = int(outcome["children_kib"]) * 1024  # type: ignore[call-overload]
    assert peak < BOMB_MEMORY_BOUND, f"python peak over baseline {peak / MIB:.0f} MiB"
    assert gpg_peak < BOMB_MEMORY_BOUND, f"gpg peak {gpg_peak / MIB:.0f} MiB"
    print(f"{engine_name} {bomb}: {outcome}")


def test_pgpy_bomb_peak_is_also_bounded_in_process(
    gpg_keys: GpgTestKeys, bombs: dict[str, Path], reliability_figures: Figures
) -> None:
    # tracemalloc sees every Python allocation of the inflate loop, not just the RSS.
    decryptor = PGPyDecryptor(gpg_keys.decryptor_keys(), LIMITS)
    reliability_figures.add("hostile_inputs")
    tracemalloc.start()
    try:
        with pytest.raises(DecryptError) as caught:
            decryptor.decrypt_and_verify(bombs["zip"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "plaintext_too_large"
    # The cap, one decompress call's output (16 MiB), the ciphertext's copies, some slack.
    bound = LIMITS.max_plaintext_bytes + 16 * MIB + 3 * bombs["zip"].stat().st_size + 16 * MIB
    assert peak < bound, (peak, bound)
