"""Unit tests for the gpg --status-fd parser and the decision made from its lines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batchbridge.connectors.pgp.status import (
    GpgVerdict,
    evaluate,
    parse_gpg_time,
    parse_status,
    split_signatures,
)
from batchbridge.errors import (
    ConfigError,
    DecryptError,
    IntegrityError,
    SignatureError,
)

PARTNER = "77CFAFBF70F51196869512CFABAAE6F5FA4206CF"
STRANGER = "2A7D89AC75148E6DF57BE0B793F8DDB9477C3DDB"

OURS = "6E4A0F47AF0BD3781671B42F60AED1B8963D3B47"
OUR_SUBKEY = "8FD096AA63902EE3EEA28F4B9873709B6F0D85AC"

# Lines as gpg 2.2.40 printed them for a good signed + encrypted message.
HEAD = f"""\
[GNUPG:] ENC_TO 9873709B6F0D85AC 18 0
[GNUPG:] KEY_CONSIDERED {OURS} 0
[GNUPG:] DECRYPTION_KEY {OUR_SUBKEY} {OURS} u
[GNUPG:] BEGIN_DECRYPTION
[GNUPG:] DECRYPTION_INFO 2 9 0
[GNUPG:] PLAINTEXT 62 1795278646 pt.txt
[GNUPG:] PLAINTEXT_LENGTH 6
"""
GOOD_SIG = f"""\
[GNUPG:] NEWSIG
[GNUPG:] SIG_ID olc+sOUwKULASgFOrQXnKW6qkBM 2026-11-21 1795278646
[GNUPG:] GOODSIG ABAAE6F5FA4206CF Partner <p@x>
[GNUPG:] VALIDSIG {PARTNER} 2026-11-21 1795278646 0 4 0 22 10 00 {PARTNER}
"""
TAIL = """\
[GNUPG:] DECRYPTION_OKAY
[GNUPG:] GOODMDC
[GNUPG:] END_DECRYPTION
"""


def run(text: str, returncode: int = 0, pinned: tuple[str, ...] = (PARTNER,)) -> GpgVerdict:
    return evaluate(parse_status(text), pinned_fingerprints=pinned, returncode=returncode)


def test_parse_status_ignores_other_lines_and_keeps_arguments() -> None:
    lines = parse_status(b"gpg: noise\n[GNUPG:] NEWSIG\n[GNUPG:] DECRYPTION_INFO 2 9 0\n\n")
    assert [(line.keyword, line.args) for line in lines] == [
        ("NEWSIG", ()),
        ("DECRYPTION_INFO", ("2", "9", "0")),
    ]


def test_parse_gpg_time_reads_epoch_and_iso_and_zero() -> None:
    assert parse_gpg_time("1795278646") == datetime.fromtimestamp(1795278646, tz=UTC)
    assert parse_gpg_time("20240102T030405") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_gpg_time("0") is None


def test_good_message_yields_primary_fingerprint_and_time() -> None:
    verdict = run(HEAD + GOOD_SIG + TAIL)
    assert verdict == GpgVerdict(PARTNER, datetime.fromtimestamp(1795278646, tz=UTC))


def test_signature_by_a_subkey_is_attributed_to_its_pinned_primary() -> None:
    subkey = "1111111111111111111111111111111111111111"
    sig = GOOD_SIG.replace(f"VALIDSIG {PARTNER}", f"VALIDSIG {subkey}")
    assert run(HEAD + sig + TAIL).signer_fingerprint == PARTNER


def test_fingerprint_comparison_ignores_case() -> None:
    assert run(HEAD + GOOD_SIG + TAIL, pinned=(PARTNER.lower(),))


@pytest.mark.parametrize(
    ("signature_lines", "reason"),
    [
        ("", "unsigned"),
        (
            "[GNUPG:] NEWSIG\n"
            f"[GNUPG:] ERRSIG 93F8DDB9477C3DDB 22 10 00 1795278891 9 {STRANGER}\n"
            "[GNUPG:] NO_PUBKEY 93F8DDB9477C3DDB\n",
            "wrong_signer",
        ),
        (
            "[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG 93F8DDB9477C3DDB 99 10 00 1795278891 4 -\n",
            "signature_unverifiable",
        ),
        ("[GNUPG:] NEWSIG\n[GNUPG:] BADSIG ABAAE6F5FA4206CF Partner\n", "bad_signature"),
        (GOOD_SIG.replace("GOODSIG", "REVKEYSIG"), "signer_revoked"),
        (
            "[GNUPG:] NEWSIG\n[GNUPG:] KEYEXPIRED 1794501052\n"
            + GOOD_SIG.split("\n", 1)[1].replace("GOODSIG", "EXPKEYSIG"),
            "signer_expired",
        ),
        (GOOD_SIG.replace("GOODSIG", "EXPSIG"), "signature_expired"),
        # A good signature by a key that is in the keyring but not pinned (e.g. our own).
        (GOOD_SIG.replace(PARTNER, STRANGER), "wrong_signer"),
        # GOODSIG without VALIDSIG is not enough.
        ("[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG ABAAE6F5FA4206CF Partner\n", "bad_signature"),
        # Two signatures: one good, one unverifiable -> the whole message is refused.
        (GOOD_SIG + "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG 93F8DDB9477C3DDB x\n", "bad_signature"),
    ],
)
def test_signature_failures_have_distinct_reasons(signature_lines: str, reason: str) -> None:
    with pytest.raises(SignatureError) as info:
        run(HEAD + signature_lines + TAIL)
    assert info.value.reason == reason


def test_expired_signature_keeps_valid_sig_out() -> None:
    # EXPKEYSIG arrives together with VALIDSIG: VALIDSIG alone must never be accepted.
    text = HEAD + GOOD_SIG.replace("GOODSIG", "EXPKEYSIG") + TAIL
    with pytest.raises(SignatureError, match="expired"):
        run(text)


def test_no_mdc_is_refused_even_when_gpg_would_continue() -> None:
    text = HEAD.replace("DECRYPTION_INFO 2 9 0", "DECRYPTION_INFO 0 9 0") + GOOD_SIG + TAIL
    with pytest.raises(IntegrityError) as info:
        run(text)
    assert info.value.reason == "no_mdc"


def test_no_mdc_refusal_of_gpg_22_maps_to_no_mdc() -> None:
    text = (
        HEAD.replace("DECRYPTION_INFO 2 9 0", "DECRYPTION_INFO 0 9 0")
        + GOOD_SIG
        + "[GNUPG:] DECRYPTION_FAILED\n[GNUPG:] END_DECRYPTION\n"
    )
    with pytest.raises(IntegrityError) as info:
        run(text, returncode=2)
    assert info.value.reason == "no_mdc"


def test_aead_messages_count_as_integrity_protected() -> None:
    text = HEAD.replace("DECRYPTION_INFO 2 9 0", "DECRYPTION_INFO 0 9 2") + GOOD_SIG + TAIL
    assert run(text)


def test_bad_mdc_beats_signature_problems() -> None:
    text = (
        HEAD
        + "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG ABAAE6F5FA4206CF x\n"
        + "[GNUPG:] BADMDC\n[GNUPG:] DECRYPTION_FAILED\n[GNUPG:] END_DECRYPTION\n"
    )
    with pytest.raises(IntegrityError) as info:
        run(text, returncode=2)
    assert info.value.reason == "bad_mdc"


def test_corrupt_stream_without_decryption_okay_is_an_integrity_error() -> None:
    # gpg died on a zlib error: no DECRYPTION_OKAY, no END_DECRYPTION.
    with pytest.raises(IntegrityError) as info:
        run(HEAD + "[GNUPG:] FAILURE gpg-exit 33554433\n", returncode=2)
    assert info.value.reason == "corrupt"
    assert "gpg-exit=33554433" in str(info.value)


def test_wrong_recipient() -> None:
    text = (
        "[GNUPG:] ENC_TO 076529FB46DCAA33 18 0\n[GNUPG:] NO_SECKEY 076529FB46DCAA33\n"
        "[GNUPG:] BEGIN_DECRYPTION\n[GNUPG:] DECRYPTION_FAILED\n[GNUPG:] END_DECRYPTION\n"
    )
    with pytest.raises(DecryptError) as info:
        run(text, returncode=2)
    assert info.value.reason == "wrong_recipient"
    assert "076529FB46DCAA33" in str(info.value)


def test_symmetric_message_is_not_for_us() -> None:
    text = "[GNUPG:] NEED_PASSPHRASE_SYM 9 3 2\n[GNUPG:] BEGIN_DECRYPTION\n"
    with pytest.raises(DecryptError) as info:
        run(text, returncode=2)
    assert info.value.reason == "wrong_recipient"


@pytest.mark.parametrize(
    "text",
    [
        "[GNUPG:] ENC_TO 1A879F47C78BD144 18 0\n[GNUPG:] ERROR pkdecrypt_failed 67108875\n"
        "[GNUPG:] BEGIN_DECRYPTION\n[GNUPG:] DECRYPTION_FAILED\n",
        "[GNUPG:] ENC_TO 1A879F47C78BD144 18 0\n"
        "[GNUPG:] NEED_PASSPHRASE 1A879F47C78BD144 A15C28EA81F1BE04 18 0\n",
    ],
)
def test_passphrase_problems_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        run(text, returncode=2)
    assert info.value.reason == "passphrase_rejected"


def test_not_openpgp() -> None:
    with pytest.raises(DecryptError) as info:
        run("[GNUPG:] NODATA 1\n[GNUPG:] NODATA 2\n", returncode=2)
    assert info.value.reason == "not_openpgp"


def test_signed_but_not_encrypted() -> None:
    with pytest.raises(DecryptError) as info:
        run("[GNUPG:] PLAINTEXT 62 0 x\n" + GOOD_SIG)
    assert info.value.reason == "not_encrypted"


def test_nonzero_exit_after_everything_else_passed_still_fails() -> None:
    with pytest.raises(DecryptError) as info:
        run(HEAD + GOOD_SIG + TAIL + "[GNUPG:] FAILURE decrypt 1\n", returncode=2)
    assert info.value.reason == "gpg_failed"


def test_split_signatures_groups_by_newsig() -> None:
    groups = split_signatures(parse_status(GOOD_SIG + GOOD_SIG))
    assert [[line.keyword for line in group] for group in groups] == [
        ["SIG_ID", "GOODSIG", "VALIDSIG"],
        ["SIG_ID", "GOODSIG", "VALIDSIG"],
    ]


def test_messages_never_echo_user_ids() -> None:
    text = (
        HEAD + GOOD_SIG.replace("GOODSIG", "REVKEYSIG").replace("Partner <p@x>", "Jane Doe") + TAIL
    )
    with pytest.raises(SignatureError) as info:
        run(text)
    assert "Jane" not in str(info.value)


def test_bad_signature_that_stopped_gpg_is_named_as_such() -> None:
    # gpg 2.2 prints BADSIG and exits before DECRYPTION_OKAY (seen with a valid MDC).
    text = HEAD + "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG B6947F426E9EFBF4 p\n"
    with pytest.raises(SignatureError) as info:
        run(text + "[GNUPG:] FAILURE gpg-exit 33554433\n", returncode=1)
    assert info.value.reason == "bad_signature"
