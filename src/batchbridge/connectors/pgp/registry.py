"""Registry of decryption engines and the factory that builds one from a feed's config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from batchbridge.config import LoadedFeed, PgpConfig
from batchbridge.connectors.pgp.base import Decryptor, DecryptorKeys, DecryptorLimits
from batchbridge.connectors.pgp.gnupg import GnuPGDecryptor
from batchbridge.connectors.pgp.pgpy_engine import PGPyDecryptor
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.errors import ConfigError

DecryptorFactory = Callable[[DecryptorKeys, DecryptorLimits], Decryptor]

#: engine name (the feed YAML's `pgp.engine`) -> how to build it.
DECRYPTOR_ENGINES: dict[str, DecryptorFactory] = {
    "gnupg": GnuPGDecryptor,
    "pgpy": PGPyDecryptor,
}


def decryptor_keys(pgp: PgpConfig, *, base_dir: Path | None = None) -> DecryptorKeys:
    """Resolve the key references of a feed's `pgp` section (values never enter the config)."""
    passphrase = resolve_secret(pgp.passphrase, base_dir=base_dir) if pgp.passphrase else None
    return DecryptorKeys(
        private_key=resolve_secret(pgp.private_key, base_dir=base_dir),
        passphrase=passphrase,
        partner_public_keys=tuple(
            resolve_secret(ref, base_dir=base_dir).get_secret_value()
            for ref in pgp.partner_public_keys
        ),
    )


def decryptor_limits(pgp: PgpConfig) -> DecryptorLimits:
    """The feed's plaintext size and compression-ratio caps."""
    return DecryptorLimits(
        max_plaintext_bytes=pgp.max_plaintext_bytes,
        max_compression_ratio=pgp.max_compression_ratio,
    )


def build_decryptor(loaded: LoadedFeed) -> Decryptor:
    """The feed's decryption engine, with its keys resolved and its caps applied."""
    pgp = loaded.config.pgp
    factory = DECRYPTOR_ENGINES.get(pgp.engine)
    if factory is None:
        valid = ", ".join(sorted(DECRYPTOR_ENGINES))
        raise ConfigError(
            f"feed {loaded.config.feed!r}: unknown pgp engine {pgp.engine!r} (valid: {valid})"
        )
    return factory(decryptor_keys(pgp, base_dir=loaded.base_dir), decryptor_limits(pgp))
