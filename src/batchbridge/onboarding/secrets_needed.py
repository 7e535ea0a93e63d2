"""The secrets a feed config needs (one walk over its references), each with its purpose."""

from __future__ import annotations

from dataclasses import dataclass

from batchbridge.config import FeedConfig, secret_references

# Keyed by the place of the reference in the YAML; a target's fields by "<kind>.<field>",
# since targets are named by the user. Placeholders: {host} {username} {name}.
_PURPOSES: dict[str, str] = {
    "source.private_key": "our SSH private key (OpenSSH/PEM) for {username}@{host}",
    "source.private_key_passphrase": "passphrase of that SSH key",
    "pgp.private_key": "our OpenPGP private key (the partner encrypts to its public key)",
    "pgp.passphrase": "passphrase of our OpenPGP key",
    "pgp.partner_public_keys": "the partner's public signing key (confirm its fingerprint)",
    "pseudonym_key": "HMAC key of patient_key, random per tenant: `openssl rand -hex 32`",
    "quarantine_key": (
        "AES key of quarantined rows, random per tenant: `openssl rand -hex 32` "
        "(keep it: rows stay encrypted with it)"
    ),
    "quarantine_previous_keys": "a quarantine key from before a rotation, until `keys rotate`",
    "alerts.webhook": "Slack/Teams incoming webhook URL (it holds a token)",
    "postgres.url": "database URL of target {name}: postgresql+psycopg://user:password@host/db",
    "fhir.client_secret": "OAuth2 client secret of FHIR target {name}",
    "sftp.private_key": "our SSH private key for the receiver's SFTP server (target {name})",
    "sftp.private_key_passphrase": "passphrase of that SSH key (target {name})",
    "sftp.pgp.recipient_public_keys": "the receiver's public key extracts are encrypted to "
    "(target {name})",
    "sftp.pgp.signing_key": "our OpenPGP key that signs extracts (target {name})",
    "sftp.pgp.signing_passphrase": "passphrase of that signing key (target {name})",
}


@dataclass(frozen=True)
class SecretNeed:
    """One secret reference, every place the YAML uses it, and what it is for.

    `env` is the environment variable for an `env:` reference, else None (a file or a
    Prefect Secret block, named by `reference`).
    """

    reference: str
    env: str | None
    places: tuple[str, ...]
    purpose: str


def _purpose(where: str, config: FeedConfig) -> str:
    values = {"host": "", "username": "", "name": ""}
    if config.source.kind == "sftp":
        values.update(host=config.source.host, username=config.source.username)
    key = where
    head, _, rest = where.partition(".")
    if head == "targets":
        name, _, field = rest.partition(".")
        kinds = {target.name: target.kind for target in config.targets}
        key, values["name"] = f"{kinds.get(name, '?')}.{field}", name
    template = _PURPOSES.get(key)
    return template.format(**values) if template else f"secret used at {where}"


def secrets_needed(config: FeedConfig) -> list[SecretNeed]:
    """Every secret the feed resolves at run time, one entry per reference, in YAML order."""
    places: dict[str, list[str]] = {}
    purposes: dict[str, str] = {}
    for use in secret_references(config):
        places.setdefault(use.ref, []).append(use.where)
        purposes.setdefault(use.ref, _purpose(use.where, config))
    return [
        SecretNeed(
            reference=ref,
            env=ref.removeprefix("env:") if ref.startswith("env:") else None,
            places=tuple(where),
            purpose=purposes[ref],
        )
        for ref, where in places.items()
    ]


def render_secrets_needed(needs: list[SecretNeed]) -> list[str]:
    """Lines of a table: environment variable (or reference), where in the YAML, what for."""
    rows = [(need.env or need.reference, ", ".join(need.places), need.purpose) for need in needs]
    first = max((len(row[0]) for row in rows), default=0)
    second = max((len(row[1]) for row in rows), default=0)
    return [f"  {name:<{first}}  {places:<{second}}  {purpose}" for name, places, purpose in rows]
