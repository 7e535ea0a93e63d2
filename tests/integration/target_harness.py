"""One harness per target kind for the target contract suite: open it, load, look inside.

Every harness opens a real target against a real store (a SQLite file, a PostgreSQL
database, the FHIR test server process, OpenSSH sshd) and reads what the target shows
without going through the target: `visible()` (record id -> result status, in the
spec's codes), `snapshot()` (everything stored, to compare before and after and to scan
for PHI), and `break_next_load()` / `repair()` (a failure the target meets inside its
transaction: a refusing trigger, a 500 from the server, a folder in the file's place).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString

import polars as pl
import psycopg
from pydantic import SecretStr

from batchbridge.config import SftpTargetConfig
from batchbridge.connectors.targets.base import LoadRequest, Target
from batchbridge.connectors.targets.fhir import ClientCredentials, FhirTarget
from batchbridge.connectors.targets.postgres import PostgresTarget
from batchbridge.connectors.targets.sftp_out import SftpTarget
from batchbridge.connectors.targets.sqlite import SqliteTarget
from batchbridge.validations.base import ROW_COLUMN, FhirIdentity
from batchbridge.validations.schemas.lab_results import LAB_RESULTS
from tests.support.fhir_server import FhirServerProcess
from tests.support.sshd import SshdServer

COLUMNS = [
    "patient_key",
    "loinc_code",
    "result_value",
    "result_value_numeric",
    "result_status",
    "resulted_at",
]
KEY = ("record_id",)
TENANT = "acme_lab"
SENSITIVE = "SECRET-DOE-JANE"
"""Rides in a column no target is configured to receive: must never reach one."""
TABLE = "lab_result"
IDENTITY = FhirIdentity("urn:batchbridge:acme_lab:lab_results", "urn:batchbridge:patient-key")
FHIR_STATUS = {"final": "F", "corrected": "C", "preliminary": "P"}


def lab_rows(n: int = 3) -> pl.DataFrame:
    """Rows shaped like the transformed lab_results output, plus a column not configured."""
    base = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
    return pl.DataFrame(
        {
            "record_id": [f"R{i:04d}" for i in range(1, n + 1)],
            "patient_key": [f"pk{i:062d}" for i in range(1, n + 1)],
            "loinc_code": ["2345-7"] * n,
            "result_value": [f"{90 + i}" for i in range(n)],
            "result_value_numeric": [90.0 + i + 0.25 for i in range(n)],
            "result_status": ["F"] * n,
            "resulted_at": [base + timedelta(minutes=i) for i in range(n)],
            "patient_first_name": [SENSITIVE] * n,
            ROW_COLUMN: list(range(1, n + 1)),
        },
        schema={
            "record_id": pl.String,
            "patient_key": pl.String,
            "loinc_code": pl.String,
            "result_value": pl.String,
            "result_value_numeric": pl.Float64,
            "result_status": pl.String,
            "resulted_at": pl.Datetime("us", "UTC"),
            "patient_first_name": pl.String,
            ROW_COLUMN: pl.UInt32,
        },
    )


def corrected(rows: pl.DataFrame, record_ids: set[str]) -> pl.DataFrame:
    """`rows` with the result of each of `record_ids` corrected (status C, a new value)."""
    hit = pl.col("record_id").is_in(sorted(record_ids))
    return rows.with_columns(
        result_status=pl.when(hit).then(pl.lit("C")).otherwise(pl.col("result_status")),
        result_value_numeric=pl.when(hit)
        .then(pl.lit(77.5))
        .otherwise(pl.col("result_value_numeric")),
    )


def request(
    rows: pl.DataFrame, load_id: str = "load-1", file_id: str = "file-1", tenant: str = TENANT
) -> LoadRequest:
    return LoadRequest(
        tenant=tenant,
        natural_key=KEY,
        load_id=load_id,
        file_id=file_id,
        rows=rows,
        feed="lab_results",
        source_name="LAB_20260301.csv.pgp",
    )


@dataclass
class Harness:
    """A target of one kind and the means to look into its store."""

    kind: str
    target: Target
    row_level: bool = True
    """Counts rows one by one (False: a changed file counts every row as updated)."""

    @property
    def name(self) -> str:
        return self.target.name

    def visible(self) -> dict[str, str]:
        raise NotImplementedError

    def snapshot(self) -> Any:
        raise NotImplementedError

    def break_next_load(self) -> None:
        raise NotImplementedError

    def repair(self) -> None:
        """Undo `break_next_load` (nothing to undo by default: the fault is used up)."""

    def close(self) -> None:
        self.target.close()


class SqlHarness(Harness):
    """Shared by the SQL targets: the table read back with the target's own database."""

    @property
    def table(self) -> SqliteTarget | PostgresTarget:
        """The target, as the SQL target it is (counts, columns, lineage)."""
        assert isinstance(self.target, SqliteTarget | PostgresTarget)
        return self.target

    def reopen(self, columns: list[str]) -> SqliteTarget | PostgresTarget:
        """Another target of this kind on the same table, configured with `columns`."""
        raise NotImplementedError

    def fetch(self, query: LiteralString) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def execute(self, statement: LiteralString) -> None:
        raise NotImplementedError

    def visible(self) -> dict[str, str]:
        if not self.fetch(_TABLE_EXISTS[self.kind]):
            return {}
        rows = self.fetch("SELECT record_id, result_status FROM lab_result ORDER BY record_id")
        return {str(key): str(status) for key, status in rows}

    def snapshot(self) -> Any:
        if not self.fetch(_TABLE_EXISTS[self.kind]):
            return []
        return self.fetch("SELECT * FROM lab_result ORDER BY tenant, record_id")

    def break_next_load(self) -> None:
        # The table must exist for the trigger: an empty load creates it.
        self.target.load(request(lab_rows(0), load_id="create-table"))
        for statement in _REFUSE_R0003[self.kind]:
            self.execute(statement)

    def repair(self) -> None:
        self.execute(_DROP_TRIGGER[self.kind])


_TABLE_EXISTS: dict[str, LiteralString] = {
    "sqlite": "SELECT 1 FROM sqlite_master WHERE name = 'lab_result'",
    "postgres": "SELECT 1 FROM pg_class WHERE relname = 'lab_result'",
}
_DROP_TRIGGER: dict[str, LiteralString] = {
    "sqlite": "DROP TRIGGER refuse_r0003",
    "postgres": "DROP TRIGGER refuse_r0003 ON lab_result",
}
_REFUSE_R0003: dict[str, tuple[LiteralString, ...]] = {
    # Row R0003 is refused after the rows before it were written by the same statement.
    "sqlite": (
        "CREATE TRIGGER refuse_r0003 BEFORE INSERT ON lab_result "
        "WHEN NEW.record_id = 'R0003' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    ),
    "postgres": (
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$",
        "CREATE TRIGGER refuse_r0003 BEFORE INSERT ON lab_result FOR EACH ROW "
        "WHEN (NEW.record_id = 'R0003') EXECUTE FUNCTION refuse()",
    ),
}


class SqliteHarness(SqlHarness):
    def __init__(self, path: Path) -> None:
        super().__init__("sqlite", SqliteTarget("warehouse", path, TABLE, COLUMNS))
        self.path = path

    def reopen(self, columns: list[str]) -> SqliteTarget:
        return SqliteTarget("warehouse", self.path, TABLE, columns)

    def fetch(self, query: LiteralString) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(query).fetchall()
        finally:
            conn.close()

    def execute(self, statement: LiteralString) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(statement)
        finally:
            conn.close()


class PostgresHarness(SqlHarness):
    def __init__(self, url: str) -> None:
        target = PostgresTarget(
            "warehouse",
            url,
            TABLE,
            "public",
            COLUMNS,
            max_attempts=3,
            retry_initial_wait=0.01,
            retry_max_wait=0.05,
        )
        super().__init__("postgres", target)
        self.url = url
        self.dsn = url.replace("postgresql+psycopg://", "postgresql://")

    def reopen(self, columns: list[str]) -> PostgresTarget:
        return PostgresTarget("warehouse", self.url, TABLE, "public", columns)

    def fetch(self, query: LiteralString) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(query).fetchall()

    def execute(self, statement: LiteralString) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement)


class FhirHarness(Harness):
    """The FHIR target with Bundles larger than any load here: one transaction per load."""

    def __init__(self, server: FhirServerProcess) -> None:
        auth = ClientCredentials(
            server.token_url, server.client_id, SecretStr(server.client_secret), target="fhir"
        )
        target = FhirTarget(
            "fhir",
            server.base_url,
            LAB_RESULTS,
            IDENTITY,
            COLUMNS,
            auth=auth,
            bundle_size=50,
            max_attempts=2,
            retry_initial_wait=0.01,
            retry_max_wait=0.02,
        )
        super().__init__("fhir", target)
        self.server = server

    def visible(self) -> dict[str, str]:
        return {
            str(r["identifier"][0]["value"]): FHIR_STATUS[r["status"]]
            for r in self.server.resources("Observation")
        }

    def snapshot(self) -> Any:
        return {
            kind: sorted(json.dumps(r, sort_keys=True) for r in self.server.resources(kind))
            for kind in ("Observation", "Patient")
        }

    def break_next_load(self) -> None:
        self.server.add_fault(500)


class SftpHarness(Harness):
    """The outbound SFTP target: one CSV file per source file, replaced whole."""

    def __init__(self, server: SshdServer) -> None:
        outbox = server.root / f"outbox-{secrets.token_hex(4)}"
        outbox.mkdir()
        config = SftpTargetConfig(
            name="partner_drop",
            host=server.host,
            port=server.port,
            username=server.username,
            remote_dir=str(outbox),
            host_keys=[server.host_key_line],
            private_key=f"file:{server.client_key_path}",
            columns=COLUMNS,
            connect_timeout_seconds=5,
            max_attempts=2,
        )
        target = SftpTarget(config, feed="lab_results", backoff_seconds=0.01)
        super().__init__("sftp", target, row_level=False)
        self.outbox = outbox
        self.file = outbox / target.remote_name(request(lab_rows(0)))

    def visible(self) -> dict[str, str]:
        if not self.file.is_file():
            return {}
        frame = pl.read_csv(self.file, infer_schema=False)
        return dict(zip(frame["record_id"], frame["result_status"], strict=True))

    def snapshot(self) -> Any:
        # Dot-files are the target's temporary files, which no partner pickup reads.
        return {
            p.name: p.read_bytes()
            for p in sorted(self.outbox.iterdir())
            if p.is_file() and not p.name.startswith(".")
        }

    def break_next_load(self) -> None:
        self.file.mkdir()

    def repair(self) -> None:
        self.file.rmdir()
