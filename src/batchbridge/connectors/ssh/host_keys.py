"""SSH key handling for the SFTP source and target: pinned host keys, fingerprints, client key."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from collections.abc import Sequence

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from batchbridge.errors import ConfigError, HostKeyError

_RSA_ALGORITHMS = frozenset({"ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"})
# Host key algorithms paramiko may negotiate; used when its private list is unavailable.
_KNOWN_HOST_KEY_ALGORITHMS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style fingerprint of a public key: 'SHA256:' + unpadded base64."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def describe_key(key: paramiko.PKey) -> str:
    """Key type and fingerprint, e.g. 'ssh-ed25519 SHA256:…'."""
    return f"{key.get_name()} {fingerprint(key)}"


def parse_host_key(line: str) -> paramiko.PKey:
    """Parse one pinned key written as 'type base64 [comment]' (an OpenSSH .pub line)."""
    fields = line.split()
    if len(fields) < 2:
        raise ConfigError("pinned host key must look like 'ssh-ed25519 AAAA…'")
    key_type, data = fields[0], fields[1]
    try:
        blob = base64.b64decode(data, validate=True)
        return paramiko.PKey.from_type_string(key_type, blob)
    except (binascii.Error, ValueError):
        raise ConfigError(f"pinned host key of type {key_type!r} is not valid base64") from None
    except paramiko.pkey.UnknownKeyType:
        raise ConfigError(f"pinned host key type {key_type!r} is not supported") from None
    except (paramiko.SSHException, TypeError):
        raise ConfigError(f"pinned host key of type {key_type!r} is malformed") from None


def parse_host_keys(
    lines: Sequence[str], *, field: str = "source.host_keys"
) -> list[paramiko.PKey]:
    """Parse every pinned host key of a feed; an invalid one is a ConfigError naming its index.

    `field` is where the keys sit in the feed YAML, for that message.
    """
    keys: list[paramiko.PKey] = []
    for index, line in enumerate(lines):
        try:
            keys.append(parse_host_key(line))
        except ConfigError as exc:
            raise ConfigError(f"{field}[{index}]: {exc}") from None
    return keys


def _algorithms_for(key: paramiko.PKey) -> frozenset[str]:
    name = key.get_name()
    return _RSA_ALGORITHMS if name == "ssh-rsa" else frozenset({name})


def disabled_host_key_algorithms(pinned: Sequence[paramiko.PKey]) -> list[str]:
    """Host key algorithms to disable so the server can only present a pinned key type.

    Without this, a server with several host keys may present a type we did not pin and
    be refused although it also holds the pinned key.
    """
    allowed = frozenset().union(*(_algorithms_for(key) for key in pinned))
    offered = getattr(paramiko.Transport, "_preferred_keys", _KNOWN_HOST_KEY_ALGORITHMS)
    return [name for name in (*offered, *_KNOWN_HOST_KEY_ALGORITHMS) if name not in allowed]


def verify_host_key(offered: paramiko.PKey, pinned: Sequence[paramiko.PKey], where: str) -> None:
    """Return if `offered` is one of the pinned keys; otherwise raise HostKeyError."""
    for key in pinned:
        if key.get_name() == offered.get_name() and key.asbytes() == offered.asbytes():
            return
    pinned_text = ", ".join(describe_key(key) for key in pinned)
    raise HostKeyError(
        f"host key of {where} is not pinned for this feed: the server offered "
        f"{describe_key(offered)} and the pinned keys ({pinned_text}) did not match; "
        "refusing to connect. If the partner rotated its key, confirm the new fingerprint "
        "with them out of band before pinning it."
    )


class PinnedHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Accept exactly the pinned keys and refuse any other with HostKeyError (never adds)."""

    def __init__(self, pinned: Sequence[paramiko.PKey], where: str) -> None:
        self.pinned = list(pinned)
        self.where = where

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        """Called by paramiko for every connection (no known_hosts is loaded)."""
        verify_host_key(key, self.pinned, self.where)


def load_private_key(text: str, passphrase: str | None, ref: str) -> paramiko.PKey:
    """Load an ed25519, ECDSA or RSA private key; errors name `ref`, never the key.

    Accepts OpenSSH ('BEGIN OPENSSH PRIVATE KEY'), traditional PEM and PKCS#8 text,
    encrypted or not. A passphrase given for an unencrypted key is ignored.
    """
    loaded = _decode_private_key(text.encode("utf-8"), passphrase, ref)
    key_class: type[paramiko.PKey]
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    else:
        raise ConfigError(f"private key {ref} is not an ed25519, ECDSA or RSA key")
    try:
        # paramiko reads every supported type from unencrypted OpenSSH text.
        openssh = loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode("ascii")
        return key_class.from_private_key(io.StringIO(openssh))
    except (paramiko.SSHException, ValueError):
        raise ConfigError(f"private key {ref} uses a curve or size SSH cannot use") from None


def _decode_private_key(data: bytes, passphrase: str | None, ref: str) -> PrivateKeyTypes:
    password = passphrase.encode("utf-8") if passphrase else None
    load = (
        serialization.load_ssh_private_key
        if b"BEGIN OPENSSH PRIVATE KEY" in data
        else serialization.load_pem_private_key
    )
    try:
        try:
            return load(data, password)
        except TypeError:
            if password is None:
                raise ConfigError(
                    f"private key {ref} is encrypted and no private_key_passphrase is configured"
                ) from None
            return load(data, None)  # not encrypted: the passphrase is not needed
    except (ValueError, TypeError):
        raise ConfigError(
            f"private key {ref} is not a private key in OpenSSH or PEM format, "
            "or its passphrase is wrong"
        ) from None
    except UnsupportedAlgorithm:
        raise ConfigError(f"private key {ref} uses an unsupported algorithm") from None
