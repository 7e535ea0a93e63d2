"""A partner's SSH host keys, fetched without trusting or logging in, ready to confirm and pin."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import paramiko

from batchbridge.connectors.sources.sftp import server_host_key
from batchbridge.errors import HostKeyError

HOST_KEY_FAMILIES: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa": ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
    "rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
"""Host key types asked for one at a time, so a server holding several shows each."""


def key_line(key: paramiko.PKey) -> str:
    """A public key as an OpenSSH line ('ssh-ed25519 AAAA…'), the form host_keys pins."""
    return f"{key.get_name()} {key.get_base64()}"


def offered_host_keys(
    host: str,
    port: int,
    *,
    families: Sequence[str] | None = None,
    timeout: float = 15.0,
    fetch: Callable[..., paramiko.PKey] | None = None,
) -> list[paramiko.PKey]:
    """Every host key the server proves it holds, one key exchange per key type; no login."""
    fetch = fetch or server_host_key
    preferred = getattr(paramiko.Transport, "_preferred_keys", ())
    every = {*preferred, *(name for names in HOST_KEY_FAMILIES.values() for name in names)}
    keys: list[paramiko.PKey] = []
    for family, algorithms in HOST_KEY_FAMILIES.items():
        if families and family not in families:
            continue
        disabled = sorted(every - set(algorithms))
        try:
            key = fetch(host, port, disabled_algorithms=disabled, timeout=timeout)
        except HostKeyError:
            continue  # the server holds no key of this type
        if all(key.asbytes() != known.asbytes() for known in keys):
            keys.append(key)
    if not keys:
        raise HostKeyError(f"{host}:{port} offered no host key of the requested types")
    return keys
