"""SSH keys for SftpSource: pinned host keys, OpenSSH fingerprints, private key loading."""

from __future__ import annotations

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from batchbridge.connectors.ssh.host_keys import (
    PinnedHostKeyPolicy,
    disabled_host_key_algorithms,
    fingerprint,
    load_private_key,
    parse_host_key,
    parse_host_keys,
    verify_host_key,
)
from batchbridge.demo.keys import generate_ed25519
from batchbridge.errors import ConfigError, HostKeyError

# Public host key whose fingerprint was read with `ssh-keygen -lf`.
RSA_LINE = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC/IeqjotzwUe/vJBI8iQOB"
    "7cqBv1cw0aBRrWV1LZKF1LjyGVshAXXTqiIeGDI53kFxp2P9P+dS4bybvWmIA0SC4SgvmEpniqUlUDR8"
    "o3jKkWuwrrHa6HB2ze2s1IVZT7f8Cy0U6uZQ7s7mAv76rTt+AU+UApXDGs1yw4dB6f8tmJzXHegmTUNC"
    "phrPyIAL3GwlsS+4xFRCKLs8lNYNrmFuxGA6teLDRl9DoQdbMSGUHHLINE20MeQ2Y9WuylREdkK7UU+Z"
    "XZWsbW1VvIizsEdbfr3D5lCWKY55f3s7zQtNj11+vldExyRYvUZtz6EqjXn1nw3as958vj4qGlflakFN"
)
RSA_FINGERPRINT = "SHA256:pWbcBhV6t89JlUjuNOHeiCaaw6aUToQcshK7MzvHe9M"

KEYS: dict[str, PrivateKeyTypes] = {
    "ed25519": ed25519.Ed25519PrivateKey.generate(),
    "ecdsa-p256": ec.generate_private_key(ec.SECP256R1()),
    "ecdsa-p384": ec.generate_private_key(ec.SECP384R1()),
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
}
FORMATS = {
    "openssh": serialization.PrivateFormat.OpenSSH,
    "pem": serialization.PrivateFormat.TraditionalOpenSSL,
    "pkcs8": serialization.PrivateFormat.PKCS8,
}
EXPECTED_NAMES = {
    "ed25519": "ssh-ed25519",
    "ecdsa-p256": "ecdsa-sha2-nistp256",
    "ecdsa-p384": "ecdsa-sha2-nistp384",
    "rsa": "ssh-rsa",
}


def private_text(kind: str, fmt: str, passphrase: bytes | None = None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return (
        KEYS[kind]
        .private_bytes(serialization.Encoding.PEM, FORMATS[fmt], encryption)
        .decode("ascii")
    )


def test_fingerprint_matches_openssh() -> None:
    assert fingerprint(parse_host_key(RSA_LINE)) == RSA_FINGERPRINT
    assert fingerprint(parse_host_key(RSA_LINE + " root@host")) == RSA_FINGERPRINT


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("ssh-ed25519", "must look like"),
        ("ssh-ed25519 @@@", "not valid base64"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "not supported"),
    ],
)
def test_bad_pinned_keys_are_config_errors_naming_the_index(line: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"host_keys\[1\]: .*{problem}"):
        parse_host_keys([generate_ed25519().public_line, line])


def test_host_key_negotiation_is_limited_to_pinned_types() -> None:
    ed = parse_host_key(generate_ed25519().public_line)
    disabled = disabled_host_key_algorithms([ed])
    assert "ssh-ed25519" not in disabled
    assert {"rsa-sha2-512", "rsa-sha2-256", "ecdsa-sha2-nistp256"} <= set(disabled)
    disabled = disabled_host_key_algorithms([parse_host_key(RSA_LINE)])
    assert "rsa-sha2-512" not in disabled and "rsa-sha2-256" not in disabled
    assert "ssh-ed25519" in disabled


def test_only_pinned_keys_pass_and_mismatch_names_both_fingerprints() -> None:
    pinned = [parse_host_key(generate_ed25519().public_line), parse_host_key(RSA_LINE)]
    verify_host_key(parse_host_key(RSA_LINE), pinned, "h:22")
    offered = parse_host_key(generate_ed25519().public_line)
    policy = PinnedHostKeyPolicy(pinned, "sftp.example:2222")
    with pytest.raises(HostKeyError) as caught:
        policy.missing_host_key(paramiko.SSHClient(), "[sftp.example]:2222", offered)
    message = str(caught.value)
    assert "sftp.example:2222" in message
    assert f"ssh-ed25519 {fingerprint(offered)}" in message
    assert RSA_FINGERPRINT in message
    assert "did not match" in message


@pytest.mark.parametrize(
    ("kind", "fmt"),
    # ed25519 has no traditional PEM encoding.
    [(k, f) for k in sorted(KEYS) for f in sorted(FORMATS) if (k, f) != ("ed25519", "pem")],
)
def test_loads_supported_private_keys(kind: str, fmt: str) -> None:
    assert (
        load_private_key(private_text(kind, fmt), None, "env:K").get_name()
        == (EXPECTED_NAMES[kind])
    )
    encrypted = private_text(kind, fmt, b"s3cret")
    assert load_private_key(encrypted, "s3cret", "env:K").get_name() == EXPECTED_NAMES[kind]


def test_encrypted_key_without_or_with_wrong_passphrase_is_a_config_error() -> None:
    encrypted = private_text("ed25519", "openssh", b"s3cret")
    with pytest.raises(ConfigError, match="env:K is encrypted and no private_key_passphrase"):
        load_private_key(encrypted, None, "env:K")
    with pytest.raises(ConfigError, match="passphrase is wrong") as caught:
        load_private_key(encrypted, "nope", "env:K")
    assert "BEGIN" not in str(caught.value)


def test_garbage_and_unusable_keys_are_config_errors_without_key_text() -> None:
    with pytest.raises(ConfigError, match="env:K is not a private key") as caught:
        load_private_key("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n", None, "env:K")
    assert "AAAA" not in str(caught.value)
    secp256k1 = ec.generate_private_key(ec.SECP256K1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError, match="curve or size"):
        load_private_key(secp256k1.decode("ascii"), None, "env:K")
