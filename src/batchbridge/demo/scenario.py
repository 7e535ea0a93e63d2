"""A complete lab_results feed on this machine: keys, secrets, YAML, partner files on SFTP.

Shared by `batchbridge demo`, the end-to-end tests and the benchmark, so all three
exercise the same configuration a partner onboarding would produce. What only the
tests and the benchmark use (PostgreSQL targets, shipped feeds) is in
tests/support/feed_scenarios.py.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from batchbridge.demo.gpg import CompressAlgo, GpgKeyring
from batchbridge.demo.keys import write_secret_file
from batchbridge.demo.lab_data import mapping_frame, render_lab_csv
from batchbridge.validations.schemas.lab_results import IDENTIFIABLE_COLUMNS, OUTPUT_COLUMNS

LAB_TARGET_COLUMNS = [c for c in OUTPUT_COLUMNS if c not in IDENTIFIABLE_COLUMNS]
"""What the demo and test warehouses receive: everything but the identifying columns."""


@dataclass(frozen=True)
class SftpEndpoint:
    """Where the partner's SFTP server listens and how we log in and trust it.

    `remote_dir` is the folder as the server names it; `drop_dir` is the same folder on
    this machine's disk, where the partner side writes files.
    """

    host: str
    port: int
    username: str
    host_key_line: str
    client_private_key: str
    remote_dir: str
    drop_dir: Path


@dataclass
class LabFeedScenario:
    """A lab_results feed wired to a local SFTP server; drop partner files with `drop_file`."""

    root: Path
    config_dir: Path
    endpoint: SftpEndpoint
    partner: GpgKeyring
    our_fpr: str
    partner_fpr: str
    feed: str = "lab_results"
    tenant: str = "acme_lab"
    extra_signers: dict[str, str] = field(default_factory=dict)

    @property
    def feed_path(self) -> Path:
        return self.config_dir / f"{self.feed}.yaml"

    def drop_file(
        self,
        name: str,
        content: pl.DataFrame | bytes,
        *,
        signer_fpr: str | bool | None = True,
        armor: bool = False,
        compress_algo: CompressAlgo = "zlib",
        trailer: bool = True,
    ) -> Path:
        """Encrypt (to us) and sign (by the partner, unless told otherwise) into the drop folder.

        The plaintext only ever exists in gpg's stdin pipe; the file on disk is ciphertext.
        """
        data = content if isinstance(content, bytes) else render_lab_csv(content, trailer=trailer)
        signer: str | None = self.partner_fpr if signer_fpr is True else (signer_fpr or None)
        out = self.endpoint.drop_dir / name
        tmp = out.with_name(f".{name}.part")
        self.partner.encrypt_and_sign(
            data,
            recipient_fpr=self.our_fpr,
            signer_fpr=signer,
            out=tmp,
            armor=armor,
            compress_algo=compress_algo,
        )
        # Rename so the file appears whole, as a well-behaved partner upload does.
        tmp.rename(out)
        return out

    def close(self) -> None:
        """Stop the partner keyring's gpg-agent."""
        self.partner.close()


def build_lab_scenario(
    root: Path,
    endpoint: SftpEndpoint,
    *,
    targets: list[dict[str, Any]],
    engine: str = "gnupg",
    stable_seconds: float = 0.2,
    min_age_seconds: float = 0.0,
    processed_dir: str | None = None,
    timezone: str = "America/Chicago",
) -> LabFeedScenario:
    """Generate keys and secrets under `root` and write the feed YAML that uses them."""
    secrets_dir = root / "secrets"
    config_dir = root / "feeds"
    for folder in (secrets_dir, config_dir, endpoint.drop_dir):
        folder.mkdir(parents=True, exist_ok=True)
    secrets_dir.chmod(0o700)

    partner = GpgKeyring(root / "partner-gnupg")
    # Hex, not urlsafe: a passphrase starting with "-" is read by gpg as an option.
    passphrase = secrets.token_hex(16)
    partner_fpr = partner.generate_key("Acme Lab Signing", "signing@acme-lab.example")
    ours = GpgKeyring(root / "our-gnupg")
    try:
        our_fpr = ours.generate_key(
            "batchbridge inbound", "inbound@batchbridge.example", passphrase=passphrase
        )
        write_secret_file(secrets_dir / "pgp_private.asc", ours.export_secret(our_fpr, passphrase))
        partner.import_keys(ours.export_public(our_fpr))
    finally:
        ours.close()
    write_secret_file(secrets_dir / "pgp_passphrase", passphrase)
    write_secret_file(secrets_dir / "partner_public.asc", partner.export_public(partner_fpr))
    write_secret_file(secrets_dir / "sftp_key", endpoint.client_private_key)
    write_secret_file(secrets_dir / "pseudonym_key", secrets.token_hex(32))
    write_secret_file(secrets_dir / "quarantine_key", secrets.token_hex(32))
    mapping_path = root / "mappings" / "acme_lab_loinc.csv"
    mapping_path.parent.mkdir(parents=True, exist_ok=True)
    mapping_frame().write_csv(mapping_path)

    feed = {
        "feed": "lab_results",
        "tenant": "acme_lab",
        "description": "Synthetic Acme Lab feed on a local SFTP server",
        "schema": "lab_results",
        "timezone": timezone,
        "source": {
            "kind": "sftp",
            "host": endpoint.host,
            "port": endpoint.port,
            "username": endpoint.username,
            "remote_dir": endpoint.remote_dir,
            "glob": "LAB_RESULTS_*.csv.pgp",
            "host_keys": [endpoint.host_key_line],
            "private_key": "file:../secrets/sftp_key",
            "stable_seconds": stable_seconds,
            "min_age_seconds": min_age_seconds,
            "processed_dir": processed_dir,
            "max_attempts": 2,
        },
        "pgp": {
            "engine": engine,
            "private_key": "file:../secrets/pgp_private.asc",
            "passphrase": "file:../secrets/pgp_passphrase",
            "partner_public_keys": ["file:../secrets/partner_public.asc"],
        },
        "format": {"delimiter": ",", "encoding": "utf-8", "trailer_prefix": "TRAILER"},
        "mappings": {"local_test_code": "../mappings/acme_lab_loinc.csv"},
        "pseudonym_key": "file:../secrets/pseudonym_key",
        "quarantine_key": "file:../secrets/quarantine_key",
        "targets": targets,
        "schedule": {"cron": "0 2 * * *", "timezone": timezone},
    }
    (config_dir / "lab_results.yaml").write_text(
        "# Generated by batchbridge.demo.scenario: secrets are file references.\n"
        + yaml.safe_dump(feed, sort_keys=False),
        encoding="utf-8",
    )
    return LabFeedScenario(
        root=root,
        config_dir=config_dir,
        endpoint=endpoint,
        partner=partner,
        our_fpr=our_fpr,
        partner_fpr=partner_fpr,
    )


def reopen_lab_scenario(root: Path, endpoint: SftpEndpoint) -> LabFeedScenario:
    """The lab scenario `build_lab_scenario` left under `root`, on a new SFTP endpoint.

    Keys, secrets, mapping table and targets stay as they are: a ledger's quarantined
    rows are encrypted with the quarantine key, and patient keys must not change. Only
    where the partner's server is (host, port, login, its host key) is rewritten: the
    embedded server listens on a new port with a new host key at each start.
    """
    # pgpy (through the key loaders) loads only when an earlier scenario is reopened.
    from batchbridge.connectors.pgp.keys import load_private_key, load_public_keys

    config_dir = root / "feeds"
    path = config_dir / "lab_results.yaml"
    feed = yaml.safe_load(path.read_text(encoding="utf-8"))
    feed["source"].update(
        host=endpoint.host,
        port=endpoint.port,
        username=endpoint.username,
        remote_dir=endpoint.remote_dir,
        host_keys=[endpoint.host_key_line],
    )
    path.write_text(
        "# Generated by batchbridge.demo.scenario: secrets are file references.\n"
        + yaml.safe_dump(feed, sort_keys=False),
        encoding="utf-8",
    )
    endpoint.drop_dir.mkdir(parents=True, exist_ok=True)
    secrets_dir = root / "secrets"
    ours = load_private_key((secrets_dir / "pgp_private.asc").read_text(encoding="ascii"))
    (partner_key,) = load_public_keys(
        [(secrets_dir / "partner_public.asc").read_text(encoding="ascii")]
    )
    return LabFeedScenario(
        root=root,
        config_dir=config_dir,
        endpoint=endpoint,
        partner=GpgKeyring(root / "partner-gnupg"),
        our_fpr=str(ours.fingerprint).replace(" ", ""),
        partner_fpr=str(partner_key.fingerprint).replace(" ", ""),
    )


def sqlite_target(path: Path, columns: list[str] | None = None) -> dict[str, Any]:
    """Feed YAML for the embedded SQLite warehouse target."""
    return {
        "name": "warehouse",
        "kind": "sqlite",
        "path": str(path),
        "table": "lab_result",
        "columns": columns or LAB_TARGET_COLUMNS,
    }


def lab_file_name(file_date: date, seq: int | None = None) -> str:
    """A partner file name as the spec gives it."""
    suffix = f"_{seq}" if seq is not None else ""
    return f"LAB_RESULTS_ACME_{file_date:%Y%m%d}{suffix}.csv.pgp"
