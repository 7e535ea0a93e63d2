"""Both decryption engines against files made by the real gpg binary, good and hostile."""

from __future__ import annotations

import os
import traceback
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pgpy
import pytest
from pgpy.constants import SymmetricKeyAlgorithm
from pgpy.packet.packets import IntegrityProtectedSKEDataV1, PKESessionKeyV3
from pydantic import SecretStr

from batchbridge.config import load_feed_file
from batchbridge.connectors.pgp.base import Decryptor, DecryptorKeys, DecryptorLimits
from batchbridge.connectors.pgp.gnupg import GnuPGDecryptor
from batchbridge.connectors.pgp.keys import key_expiries
from batchbridge.connectors.pgp.pgpy_engine import PGPyDecryptor
from batchbridge.connectors.pgp.registry import DECRYPTOR_ENGINES, build_decryptor
from batchbridge.demo.gpg import CompressAlgo, flip_bit, truncate
from batchbridge.errors import (
    BatchbridgeError,
    ConfigError,
    DecryptError,
    IntegrityError,
    PlaintextLimitError,
    SignatureError,
)
from tests.plugins.gpg import CANARY, GpgTestKeys, MakeMessage, lab_plaintext

pytestmark = pytest.mark.integration

EngineFactory = Callable[[DecryptorKeys, DecryptorLimits], Decryptor]
ENGINES: dict[str, EngineFactory] = {"gnupg": GnuPGDecryptor, "pgpy": PGPyDecryptor}
PLAINTEXT = lab_plaintext()
ROOMY = DecryptorLimits(max_plaintext_bytes=64 * 1024**2, max_compression_ratio=200.0)


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> EngineFactory:
    """Each test runs once per engine."""
    return ENGINES[request.param]


def assert_no_plaintext(exc: BaseException) -> None:
    """Neither the message, the repr nor the traceback text may carry patient data."""
    text = "".join(traceback.format_exception(exc)) + repr(exc)
    assert CANARY not in text
    assert "CANARY" not in text


def expect_failure(
    decryptor: Decryptor, path: Path, error: type[BatchbridgeError], reason: str | None
) -> BatchbridgeError:
    with pytest.raises(error) as info:
        decryptor.decrypt_and_verify(path)
    if reason is not None:
        assert info.value.reason == reason, str(info.value)
    assert_no_plaintext(info.value)
    return info.value


# -- good files -----------------------------------------------------------------------


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("compress_algo", ["zlib", "zip", "bzip2", "none"])
def test_good_messages_decrypt_to_the_exact_plaintext(
    engine: EngineFactory,
    gpg_keys: GpgTestKeys,
    make_message: MakeMessage,
    armor: bool,
    compress_algo: CompressAlgo,
) -> None:
    path = make_message(PLAINTEXT, armor=armor, compress_algo=compress_algo)
    result = engine(gpg_keys.decryptor_keys(), ROOMY).decrypt_and_verify(path)
    assert result.data == PLAINTEXT
    assert result.signer_fingerprint == gpg_keys.partner_fpr
    assert result.signed_at is not None
    assert CANARY not in repr(result)


def test_any_of_several_pinned_keys_may_sign(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    keys = gpg_keys.decryptor_keys(gpg_keys.stranger_public, gpg_keys.partner_public)
    result = engine(keys, ROOMY).decrypt_and_verify(make_message(PLAINTEXT))
    assert result.signer_fingerprint == gpg_keys.partner_fpr


def test_one_decryptor_serves_concurrent_threads(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    # Prefect's default task runner uses threads; each call must stand alone.
    paths = [make_message(lab_plaintext(50, seed=seed)) for seed in range(6)]
    decryptor = engine(gpg_keys.decryptor_keys(), ROOMY)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(decryptor.decrypt_and_verify, paths))
    assert [r.data for r in results] == [lab_plaintext(50, seed=seed) for seed in range(6)]


def test_empty_plaintext_is_a_valid_message(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    result = engine(gpg_keys.decryptor_keys(), ROOMY).decrypt_and_verify(make_message(b""))
    assert result.data == b""


# -- signatures -----------------------------------------------------------------------


def test_unsigned_is_refused(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    path = make_message(PLAINTEXT, signer=None)
    expect_failure(engine(gpg_keys.decryptor_keys(), ROOMY), path, SignatureError, "unsigned")


def test_signed_by_a_stranger_is_refused(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    path = make_message(PLAINTEXT, signer="stranger")
    error = expect_failure(
        engine(gpg_keys.decryptor_keys(), ROOMY), path, SignatureError, "wrong_signer"
    )
    assert gpg_keys.stranger_fpr[-16:] in str(error)


def test_signed_by_a_revoked_key_is_refused(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    path = make_message(PLAINTEXT, signer="revoked")
    keys = gpg_keys.decryptor_keys(gpg_keys.revoked_public)
    expect_failure(engine(keys, ROOMY), path, SignatureError, "signer_revoked")


def test_signed_by_an_expired_key_is_refused(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    path = make_message(PLAINTEXT, signer="expired")
    keys = gpg_keys.decryptor_keys(gpg_keys.expired_public)
    expect_failure(engine(keys, ROOMY), path, SignatureError, "signer_expired")


# -- integrity ------------------------------------------------------------------------


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
def test_message_without_mdc_is_refused(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage, armor: bool
) -> None:
    path = make_message(PLAINTEXT, mdc=False, armor=armor)
    expect_failure(engine(gpg_keys.decryptor_keys(), ROOMY), path, IntegrityError, "no_mdc")


@pytest.mark.parametrize("compress_algo", ["zlib", "none"])
def test_tampered_message_is_refused(
    engine: EngineFactory,
    gpg_keys: GpgTestKeys,
    make_message: MakeMessage,
    tmp_path: Path,
    compress_algo: CompressAlgo,
) -> None:
    good = make_message(PLAINTEXT, compress_algo=compress_algo)
    for fraction in (0.3, 0.5, 0.8):
        bad = flip_bit(good, tmp_path / f"tampered-{fraction}.pgp", at_fraction=fraction)
        error = expect_failure(engine(gpg_keys.decryptor_keys(), ROOMY), bad, DecryptError, None)
        # Where the flipped bit lands decides what breaks first: the MDC, the compressed
        # stream, a packet header or (gpg stops there) the signature. Each is a refusal
        # with a reason a person can act on.
        assert error.reason in {
            "bad_mdc",
            "corrupt",
            "corrupt_compression",
            "unexpected_structure",
            "bad_signature",
            "wrong_recipient",
            "not_openpgp",
            "truncated",
        }, error.reason


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
def test_truncated_message_is_refused_as_truncated(
    engine: EngineFactory,
    gpg_keys: GpgTestKeys,
    make_message: MakeMessage,
    tmp_path: Path,
    armor: bool,
) -> None:
    good = make_message(PLAINTEXT, armor=armor)
    for fraction in (0.5, 0.99):
        cut = truncate(good, tmp_path / f"cut-{fraction}.pgp", keep_fraction=fraction)
        expect_failure(engine(gpg_keys.decryptor_keys(), ROOMY), cut, IntegrityError, "truncated")


def test_message_for_another_recipient_is_refused(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    path = make_message(PLAINTEXT, recipient="stranger")
    expect_failure(engine(gpg_keys.decryptor_keys(), ROOMY), path, DecryptError, "wrong_recipient")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"record_id,patient_mrn\nR1,CANARY\n",
        # A UTF-8 BOM starts with a byte that reads like a packet header: still not "truncated".
        "\ufeffrecord_id,patient_mrn\nR1,CANARY\n".encode(),
    ],
    ids=["empty", "csv", "csv-with-bom"],
)
def test_a_file_that_is_not_openpgp_is_refused(
    engine: EngineFactory, gpg_keys: GpgTestKeys, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "plain.csv.pgp"
    path.write_bytes(content)
    expect_failure(engine(gpg_keys.decryptor_keys(), ROOMY), path, DecryptError, "not_openpgp")


def test_wrong_passphrase_is_a_config_error(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    path = make_message(PLAINTEXT)
    keys = gpg_keys.decryptor_keys(passphrase="not the passphrase")
    expect_failure(engine(keys, ROOMY), path, ConfigError, "passphrase_rejected")


# -- limits ---------------------------------------------------------------------------


def test_plaintext_over_the_cap_is_refused(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    path = make_message(PLAINTEXT, compress_algo="none")
    limits = DecryptorLimits(max_plaintext_bytes=len(PLAINTEXT) - 1, max_compression_ratio=200)
    expect_failure(engine(gpg_keys.decryptor_keys(), limits), path, PlaintextLimitError, None)


def test_plaintext_exactly_at_the_cap_passes(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    path = make_message(PLAINTEXT)
    limits = DecryptorLimits(max_plaintext_bytes=len(PLAINTEXT), max_compression_ratio=200)
    assert engine(gpg_keys.decryptor_keys(), limits).decrypt_and_verify(path).data == PLAINTEXT


@pytest.fixture(scope="module")
def bombs(
    gpg_keys: GpgTestKeys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    """50 MB of zeros compressed three ways (a few dozen KB each, or less)."""
    folder = tmp_path_factory.mktemp("bombs")
    zeros = folder / "zeros.bin"
    zeros.write_bytes(bytes(50_000_000))
    made = {
        algo: gpg_keys.keyring.encrypt_and_sign(
            zeros,
            recipient_fpr=gpg_keys.our_fpr,
            signer_fpr=gpg_keys.partner_fpr,
            out=folder / f"bomb-{algo}.pgp",
            compress_algo=algo,
            compress_level=9,
        )
        for algo in ("zlib", "zip", "bzip2")
    }
    zeros.unlink()
    yield made


@pytest.mark.parametrize("algo", ["zlib", "zip", "bzip2"])
def test_compression_bomb_stops_early_without_big_memory(
    engine: EngineFactory, gpg_keys: GpgTestKeys, bombs: dict[str, Path], algo: str
) -> None:
    path = bombs[algo]
    limits = DecryptorLimits(max_plaintext_bytes=4 * 1024**3, max_compression_ratio=100)
    decryptor = engine(gpg_keys.decryptor_keys(), limits)
    tracemalloc.start()
    try:
        with pytest.raises(PlaintextLimitError) as info:
            decryptor.decrypt_and_verify(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "compression_ratio"
    # The 50 MB never materialise: the cap is 100 x the ciphertext (at most a few MB).
    assert peak < 100 * path.stat().st_size + 16 * 1024**2, peak


def test_pgpy_refuses_ciphertext_over_its_cap(
    gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    path = make_message(PLAINTEXT, compress_algo="none")
    decryptor = PGPyDecryptor(gpg_keys.decryptor_keys(), ROOMY, max_ciphertext_bytes=1024)
    error = expect_failure(decryptor, path, PlaintextLimitError, "ciphertext_too_large")
    assert "1024" in str(error)
    assert "gnupg" in str(error)


# -- keys and registry ----------------------------------------------------------------


def test_key_expiries_report_every_key_and_subkey(gpg_keys: GpgTestKeys) -> None:
    expiries = dict(key_expiries([gpg_keys.partner_public, gpg_keys.expired_public]))
    assert expiries[gpg_keys.partner_fpr] is None
    expired_at = expiries[gpg_keys.expired_fpr]
    assert expired_at is not None and expired_at.tzinfo is not None
    assert len(expiries) == 4  # two primaries, each with its encryption subkey
    subkey_dates = [when for fpr, when in expiries.items() if fpr != gpg_keys.expired_fpr]
    assert expired_at in subkey_dates  # the expired key's subkey expires with it


def test_key_expiries_reads_private_keys_too(gpg_keys: GpgTestKeys) -> None:
    assert dict(key_expiries([gpg_keys.our_secret]))[gpg_keys.our_fpr] is None


def test_a_private_key_pinned_as_partner_key_is_a_config_error(
    engine: EngineFactory, gpg_keys: GpgTestKeys, make_message: MakeMessage
) -> None:
    keys = DecryptorKeys(
        private_key=SecretStr(gpg_keys.our_secret),
        passphrase=SecretStr(gpg_keys.our_passphrase),
        partner_public_keys=(gpg_keys.our_secret,),
    )
    path = make_message(PLAINTEXT)
    with pytest.raises(ConfigError, match="partner public key #1"):
        engine(keys, ROOMY).decrypt_and_verify(path)


def _feed_yaml(folder: Path, engine_name: str) -> Path:
    reference = Path(__file__).resolve().parents[2] / "deployments" / "feeds" / "lab_results.yaml"
    text = reference.read_text(encoding="utf-8")
    text = text.replace("engine: gnupg", f"engine: {engine_name}")
    text = text.replace("env:ACME_LAB_PGP_PRIVATE_KEY", "file:secrets/private.asc")
    path = folder / "lab_results.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("engine_name", sorted(ENGINES))
def test_build_decryptor_resolves_secrets_relative_to_the_feed(
    gpg_keys: GpgTestKeys,
    make_message: MakeMessage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    engine_name: str,
) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "private.asc").write_text(gpg_keys.our_secret, encoding="utf-8")
    monkeypatch.setenv("ACME_LAB_PGP_PASSPHRASE", gpg_keys.our_passphrase)
    monkeypatch.setenv("ACME_LAB_PARTNER_SIGNING_KEY", gpg_keys.partner_public)
    loaded = load_feed_file(_feed_yaml(tmp_path, engine_name))
    decryptor = build_decryptor(loaded)
    assert isinstance(decryptor, GnuPGDecryptor if engine_name == "gnupg" else PGPyDecryptor)
    assert decryptor.decrypt_and_verify(make_message(PLAINTEXT)).data == PLAINTEXT


def test_build_decryptor_names_valid_engines_for_an_unknown_one(
    gpg_keys: GpgTestKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(DECRYPTOR_ENGINES, "pgpy")
    loaded = load_feed_file(_feed_yaml(tmp_path, "pgpy"))
    with pytest.raises(ConfigError, match="valid: gnupg"):
        build_decryptor(loaded)


def test_build_decryptor_reports_a_missing_secret_by_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_LAB_PGP_PASSPHRASE", raising=False)
    loaded = load_feed_file(_feed_yaml(tmp_path, "gnupg"))
    with pytest.raises(ConfigError, match=r"secrets/private\.asc|ACME_LAB"):
        build_decryptor(loaded)


# -- hand-made messages ---------------------------------------------------------------
# gpg will not write these shapes, so they are assembled packet by packet: the session key
# and the MDC-protected envelope come from pgpy, the signature from the partner's real key.


def _packet(tag: int, body: bytes) -> bytes:
    """A new-format packet with a definite length (RFC 4880 §4.2.2)."""
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        length = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        length = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + length + body


def _literal(data: bytes) -> bytes:
    return _packet(11, b"b\x00" + b"\x00\x00\x00\x00" + data)


def _zlib(inner: bytes) -> bytes:
    return _packet(8, b"\x02" + zlib.compress(inner))


def _envelope(gpg_keys: GpgTestKeys, inner: bytes, out: Path) -> Path:
    """Encrypt `inner` (a packet stream) to our key in a SEIPD packet, as any tool would."""
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


def _partner_signature(gpg_keys: GpgTestKeys, data: bytes) -> tuple[bytes, bytes]:
    """(one-pass signature packet, signature packet) by the partner key over `data`."""
    partner, _ = pgpy.PGPKey.from_blob(gpg_keys.keyring.export_secret(gpg_keys.partner_fpr))
    signature = partner.sign(data)
    sig_packet = bytes(signature._signature.__bytearray__())
    one_pass = _packet(
        4,
        bytes([3, int(signature.type), int(signature.hash_algorithm), int(signature.key_algorithm)])
        + bytes.fromhex(signature.signer)
        + b"\x01",
    )
    return one_pass, sig_packet


def test_hand_made_signed_message_is_accepted(
    engine: EngineFactory, gpg_keys: GpgTestKeys, tmp_path: Path
) -> None:
    # Control for the two tests below: the assembly itself is sound.
    one_pass, signature = _partner_signature(gpg_keys, PLAINTEXT)
    inner = _zlib(one_pass + _literal(PLAINTEXT) + signature)
    path = _envelope(gpg_keys, inner, tmp_path / "made.pgp")
    assert engine(gpg_keys.decryptor_keys(), ROOMY).decrypt_and_verify(path).data == PLAINTEXT


def test_signature_over_other_data_is_a_bad_signature(
    engine: EngineFactory, gpg_keys: GpgTestKeys, tmp_path: Path
) -> None:
    one_pass, signature = _partner_signature(gpg_keys, PLAINTEXT)
    altered = PLAINTEXT.replace(b"R000001", b"R000002")
    path = _envelope(gpg_keys, _zlib(one_pass + _literal(altered) + signature), tmp_path / "x.pgp")
    expect_failure(engine(gpg_keys.decryptor_keys(), ROOMY), path, SignatureError, "bad_signature")


def test_pgpy_refuses_nested_compression(gpg_keys: GpgTestKeys, tmp_path: Path) -> None:
    one_pass, signature = _partner_signature(gpg_keys, PLAINTEXT)
    inner = _zlib(_zlib(one_pass + _literal(PLAINTEXT) + signature))
    path = _envelope(gpg_keys, inner, tmp_path / "nested.pgp")
    decryptor = PGPyDecryptor(gpg_keys.decryptor_keys(), ROOMY)
    expect_failure(decryptor, path, DecryptError, "nested_compression")


def test_pgpy_refuses_a_signature_outside_the_message_grammar(
    gpg_keys: GpgTestKeys, tmp_path: Path
) -> None:
    # A trailing signature with no one-pass header is not a signed message (RFC 4880 §11.3);
    # gpg ignores it and reports the message unsigned, pgpy's engine refuses the layout.
    _, signature = _partner_signature(gpg_keys, PLAINTEXT)
    path = _envelope(gpg_keys, _zlib(_literal(PLAINTEXT) + signature), tmp_path / "odd.pgp")
    decryptor = PGPyDecryptor(gpg_keys.decryptor_keys(), ROOMY)
    expect_failure(decryptor, path, DecryptError, "unexpected_structure")
