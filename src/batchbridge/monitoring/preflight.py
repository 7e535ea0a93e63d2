"""Offline checks of a feed before anything runs: schema, mappings, target columns, secrets, keys.

Nothing here opens a connection or starts Prefect: `feeds check` and every command
that runs a flow call it first, so a missing secret fails in well under a second.
Problems name the config place and the reference, never a secret's value.
"""

from __future__ import annotations

from batchbridge.config import LoadedFeed, SecretUse, secret_references
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.errors import ConfigError
from batchbridge.validations.mapping import load_feed_mappings
from batchbridge.validations.registry import get_schema

_ARMOR_PRIVATE = "-----BEGIN PGP PRIVATE KEY BLOCK-----"
_ARMOR_PUBLIC = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_SSH_PRIVATE_MARKERS = ("-----BEGIN OPENSSH PRIVATE KEY-----", "PRIVATE KEY-----")

_KEY_SHAPES: dict[str, tuple[tuple[str, ...], str]] = {
    "pgp.private_key": ((_ARMOR_PRIVATE,), "an armored OpenPGP private key"),
    "pgp.partner_public_keys": ((_ARMOR_PUBLIC,), "an armored OpenPGP public key"),
    "source.private_key": (_SSH_PRIVATE_MARKERS, "an SSH private key (OpenSSH or PEM)"),
}
"""Secrets whose value must look like a key: checked by shape only (no key library)."""


def _key_shape_problem(use: SecretUse, value: str) -> str | None:
    expected = _KEY_SHAPES.get(use.where)
    if expected is None and use.where.endswith(".private_key"):
        expected = _KEY_SHAPES["source.private_key"]
    if expected is None and use.where.endswith(("recipient_public_keys",)):
        expected = _KEY_SHAPES["pgp.partner_public_keys"]
    if expected is None and use.where.endswith(".signing_key"):
        expected = _KEY_SHAPES["pgp.private_key"]
    if expected is None:
        return None
    markers, what = expected
    if any(marker in value for marker in markers):
        return None
    return f"{use.where}: secret {use.ref} is not {what}"


def check_secrets(loaded: LoadedFeed) -> list[str]:
    """Every secret the feed references resolves, and key-shaped ones look like keys."""
    problems: list[str] = []
    for use in secret_references(loaded.config):
        if use.ref.startswith("prefect-secret:"):
            # Needs the Prefect API: the health check and the run resolve these.
            continue
        try:
            value = resolve_secret(use.ref, base_dir=loaded.base_dir).get_secret_value()
        except ConfigError as exc:
            problems.append(f"{use.where}: {exc}")
            continue
        shape = _key_shape_problem(use, value)
        if shape is not None:
            problems.append(shape)
    return problems


def check_feed(loaded: LoadedFeed, *, resolve_secrets: bool = True) -> list[str]:
    """Problems that would stop a run, found without running it (empty list: ready)."""
    problems: list[str] = []
    config = loaded.config
    try:
        schema = get_schema(config.schema_name)
    except ConfigError as exc:
        return [str(exc)]
    try:
        load_feed_mappings(loaded, schema)
    except ConfigError as exc:
        problems.append(str(exc))
    produced = set(schema.output_columns) | set(schema.natural_key)
    for target in config.targets:
        unknown = [c for c in target.columns if c not in produced]
        if unknown:
            problems.append(f"target {target.name}: unknown columns {', '.join(unknown)}")
    if resolve_secrets:
        problems += check_secrets(loaded)
    return problems


def require_ready(loaded: LoadedFeed) -> None:
    """Raise ConfigError listing every problem `check_feed` finds (before a run starts)."""
    problems = check_feed(loaded)
    if problems:
        shown = "; ".join(problems)
        raise ConfigError(
            f"feed {loaded.config.feed} is not ready ({len(problems)} problem(s)): {shown} "
            f"(see `batchbridge feeds check {loaded.config.feed}`)"
        )
