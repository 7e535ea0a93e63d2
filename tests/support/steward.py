"""A lab_results feed on local files (SQLite ledger + warehouse) with quarantined rows for stewards.

`ingest` runs the nightly stages after decryption — parse, validate, quarantine
(encrypted), transform, load, reconcile — with the same functions the flow uses, so
steward tests start from the ledger state a real run leaves, in milliseconds and
without SFTP or PGP.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from batchbridge.config import LoadedFeed, load_feed
from batchbridge.config.settings import Settings
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.targets.loading import load_into_targets, reconcile_counts
from batchbridge.connectors.targets.registry import open_target
from batchbridge.demo.keys import write_secret_file
from batchbridge.demo.lab_data import mapping_frame, render_lab_csv
from batchbridge.demo.scenario import lab_file_name, sqlite_target
from batchbridge.ledger.crypto import RowCipher
from batchbridge.ledger.models import FileState, RunStatus
from batchbridge.ledger.run_report import FileReport, RunReport
from batchbridge.ledger.store import LedgerStore
from batchbridge.validations.base import TransformContext, ValidationContext
from batchbridge.validations.mapping import load_feed_mappings
from batchbridge.validations.parse import file_date_from_name, parse_and_validate
from batchbridge.validations.quarantine import count_reasons, encrypt_quarantined
from batchbridge.validations.registry import get_schema
from batchbridge.validations.transform import transform_valid_rows


@dataclass
class LocalLabFeed:
    """A lab_results feed whose YAML, secrets, mapping, ledger and warehouse live under `root`.

    Several feeds (tenants) built under one root share the feeds folder and the ledger.
    """

    root: Path
    feed: str
    tenant: str

    @property
    def config_dir(self) -> Path:
        return self.root / "feeds"

    @property
    def feed_path(self) -> Path:
        return self.config_dir / f"{self.feed}.yaml"

    @property
    def mapping_path(self) -> Path:
        return self.root / "mappings" / f"{self.tenant}_loinc.csv"

    @property
    def warehouse_path(self) -> Path:
        return self.root / f"warehouse_{self.feed}.db"

    @property
    def settings(self) -> Settings:
        return Settings(
            database_url=f"sqlite:///{self.root / 'ledger.db'}",
            staging_dir=self.root / "staging",
            config_dir=self.config_dir,
        )

    def loaded(self) -> LoadedFeed:
        return load_feed(self.feed, self.config_dir)

    def new_secret(self, name: str) -> str:
        """Write a fresh random secret file for this feed; returns its `file:` reference."""
        write_secret_file(self.root / "secrets" / f"{self.feed}_{name}", secrets.token_hex(32))
        return f"file:../secrets/{self.feed}_{name}"

    def update_yaml(self, **changes: Any) -> None:
        """Change top-level keys of the feed YAML (e.g. quarantine keys)."""
        data = yaml.safe_load(self.feed_path.read_text(encoding="utf-8"))
        data.update(changes)
        self.feed_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def add_mapping(self, code: str, loinc: str, display: str, quantitative: bool) -> None:
        """A steward adds a local code to the feed's mapping table."""
        with self.mapping_path.open("a", encoding="utf-8") as handle:
            handle.write(f"{code},{loinc},{display},{'true' if quantitative else 'false'}\n")

    def ingest(self, rows: pl.DataFrame, *, file_date: date, seq: int | None = None) -> str:
        """Process one partner file as a nightly run does after decryption; returns the file id."""
        return ingest_frame(self.loaded(), self.settings, rows, name=lab_file_name(file_date, seq))


def build_local_lab_feed(
    root: Path, *, feed: str = "lab_results", tenant: str = "acme_lab"
) -> LocalLabFeed:
    """Write the feed's YAML, secrets and mapping under `root` (ledger: root/ledger.db)."""
    built = LocalLabFeed(root=root, feed=feed, tenant=tenant)
    drop = root / "drop" / feed
    for folder in (built.config_dir, root / "secrets", drop, built.mapping_path.parent):
        folder.mkdir(parents=True, exist_ok=True)
    (root / "secrets").chmod(0o700)
    mapping_frame().write_csv(built.mapping_path)
    config = {
        "feed": feed,
        "tenant": tenant,
        "schema": "lab_results",
        "timezone": "America/Chicago",
        "source": {"kind": "local", "path": str(drop), "glob": "*.csv.pgp"},
        # Never resolved by the steward code paths: ingest starts after decryption.
        "pgp": {
            "private_key": "file:../secrets/pgp_private.asc",
            "partner_public_keys": ["file:../secrets/partner_public.asc"],
        },
        "mappings": {"local_test_code": f"../mappings/{built.mapping_path.name}"},
        "pseudonym_key": built.new_secret("pseudonym_key"),
        "quarantine_key": built.new_secret("quarantine_key"),
        "targets": [sqlite_target(built.warehouse_path)],
        "schedule": {"cron": "0 2 * * *", "timezone": "America/Chicago"},
    }
    built.feed_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return built


def ingest_frame(loaded: LoadedFeed, settings: Settings, rows: pl.DataFrame, *, name: str) -> str:
    """Validate, quarantine, transform, load and reconcile one file's rows; returns the file id."""
    config = loaded.config
    schema = get_schema(config.schema_name)
    mappings = load_feed_mappings(loaded, schema)
    store = LedgerStore.from_url(settings.database_url)
    try:
        run_id = store.start_run(tenant=config.tenant, feed=config.feed, flow_run_id=None)
        data = render_lab_csv(rows)
        claim = store.claim_file(
            run_id=run_id,
            tenant=config.tenant,
            feed=config.feed,
            name=name,
            size=len(data),
            force=False,
        )
        assert claim is not None, f"{name} was ingested already"
        vctx = ValidationContext(
            tenant=config.tenant,
            file_date=file_date_from_name(name, datetime.now(UTC).date()),
            timezone=config.timezone,
            mappings=mappings,
        )
        validated = parse_and_validate(data, config.format, schema, vctx)
        result = validated.result
        cipher = RowCipher(resolve_secret(config.quarantine_key, base_dir=loaded.base_dir))
        entries = encrypt_quarantined(
            result.quarantined,
            columns=schema.columns,
            cipher=cipher,
            file_id=claim.file_id,
            record_column=schema.natural_key[0],
        )
        store.save_quarantine(
            tenant=config.tenant,
            feed=config.feed,
            file_id=claim.file_id,
            run_id=run_id,
            entries=entries,
        )
        store.advance_file(
            claim.file_id,
            FileState.VALIDATED,
            rows_read=validated.rows_read,
            rows_declared=validated.rows_declared,
            rows_valid=result.valid.height,
            rows_quarantined=result.quarantined.height,
        )
        tctx = TransformContext(
            tenant=config.tenant,
            timezone=config.timezone,
            mappings=mappings,
            pseudonym_key=resolve_secret(config.pseudonym_key, base_dir=loaded.base_dir)
            .get_secret_value()
            .encode(),
        )
        out = transform_valid_rows(result.valid, schema, tctx)
        targets = [(open_target(loaded, t), list(t.columns)) for t in config.targets]
        try:
            loads = load_into_targets(
                targets,
                tenant=config.tenant,
                natural_key=schema.natural_key,
                file_id=claim.file_id,
                rows=out,
                on_loaded=lambda done: store.record_load(
                    run_id=run_id, file_id=claim.file_id, load=done.record()
                ),
            )
        finally:
            for target, _ in targets:
                target.close()
        reconcile_counts(
            rows_read=validated.rows_read,
            rows_declared=validated.rows_declared,
            rows_valid=result.valid.height,
            rows_quarantined=result.quarantined.height,
            loads=[done.result for done in loads],
        )
        store.advance_file(claim.file_id, FileState.RECONCILED)
        report = RunReport(run_id=run_id, tenant=config.tenant, feed=config.feed)
        report.status = RunStatus.SUCCEEDED
        report.files.append(
            FileReport(
                name=name,
                file_id=claim.file_id,
                outcome="reconciled",
                rows_read=validated.rows_read,
                rows_declared=validated.rows_declared,
                rows_valid=result.valid.height,
                rows_quarantined=result.quarantined.height,
                quarantine_reasons=count_reasons(result.quarantined),
                targets={done.result.target: done.counts() for done in loads},
                balanced=True,
            )
        )
        store.finish_run(run_id, status=RunStatus.SUCCEEDED, report=report.to_dict())
        return claim.file_id
    finally:
        store.engine.dispose()
