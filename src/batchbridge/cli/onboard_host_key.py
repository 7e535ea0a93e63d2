"""`onboard host-key`: show a partner server's host keys (not trusted), pin confirmed ones."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from batchbridge.config import load_feed
from batchbridge.config.settings import load_settings
from batchbridge.errors import ConfigError, HostKeyError

if TYPE_CHECKING:
    import paramiko


def host_key_command(
    host: str,
    port: int,
    *,
    key_types: Sequence[str] | None = None,
    timeout: float = 15.0,
    pin_feed: str | None = None,
    confirmed: bool = False,
    fingerprints: Sequence[str] | None = None,
    config_dir: Path | None = None,
    fetch: Callable[..., paramiko.PKey] | None = None,
) -> int:
    """Print the server's host keys and fingerprints; with --pin and --confirmed, pin them."""
    # paramiko loads only for the host-key step.
    from batchbridge.connectors.ssh.host_keys import fingerprint
    from batchbridge.onboarding.host_keys import key_line, offered_host_keys

    keys = offered_host_keys(host, port, families=key_types, timeout=timeout, fetch=fetch)
    where = f"{host}:{port}"
    print(
        f"{where} offered {len(keys)} host key(s), fetched WITHOUT trusting or logging in "
        "(not verified yet):"
    )
    for key in keys:
        print()
        print(key_line(key))
        print(f"    fingerprint {fingerprint(key)}  ({key.get_name()}, {key.get_bits()} bits)")
    print()
    print(
        "Before pinning, confirm the fingerprint with the partner OUT OF BAND (a phone call\n"
        "to a known number, or their signed ticket; not the e-mail that gave you the host).\n"
        "Anyone between you and the server would show you their own key here."
    )
    if pin_feed is None:
        print(
            f"Once confirmed: batchbridge onboard host-key {host} --port {port} "
            "--pin FEED --confirmed [--fingerprint SHA256:…]"
        )
        return 0
    if not confirmed:
        print(
            f"not pinned: add --confirmed once the partner confirmed the fingerprint "
            f"(feed {pin_feed} is unchanged)",
            file=sys.stderr,
        )
        return ConfigError.exit_code
    chosen = keys
    if fingerprints:
        chosen = [key for key in keys if fingerprint(key) in fingerprints]
        offered = {fingerprint(key) for key in keys}
        gone = [fp for fp in fingerprints if fp not in offered]
        if gone:
            raise HostKeyError(
                f"{where} does not offer the confirmed fingerprint(s) {', '.join(gone)} now; "
                "nothing pinned: ask the partner before pinning anything"
            )
    return _pin(pin_feed, host, port, chosen, config_dir=config_dir)


def _pin(
    feed: str, host: str, port: int, keys: list[paramiko.PKey], *, config_dir: Path | None
) -> int:
    from batchbridge.connectors.ssh.host_keys import fingerprint
    from batchbridge.onboarding.feed_yaml import pin_host_keys, pin_note
    from batchbridge.onboarding.host_keys import key_line

    settings = load_settings(config_dir)
    source = load_feed(feed, settings.config_dir).config.source
    if source.kind != "sftp":
        raise ConfigError(f"feed {feed} has a {source.kind} source: nothing to pin")
    if (source.host, source.port) != (host, port):
        raise ConfigError(
            f"feed {feed} connects to {source.host}:{source.port}, not {host}:{port}; "
            "nothing pinned"
        )
    prints = [fingerprint(key) for key in keys]
    before = pin_host_keys(
        feed, settings.config_dir, [key_line(key) for key in keys], note=pin_note(prints)
    )
    print(f"pinned {', '.join(prints)} for feed {feed}")
    if before:
        print(f"  (replaced {len(before)} previously pinned key(s))")
    print(f"next: batchbridge health {feed}")
    return 0
