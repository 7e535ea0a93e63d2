"""The sections of a feed YAML: source, keys, format, targets, alerts and file contract."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from batchbridge.config.secret_refs import SecretRef

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"

UNPINNED_HOST_KEY = "UNPINNED"
"""Placeholder `onboard scaffold` writes into host_keys until a key is confirmed and pinned."""


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SftpSourceConfig(StrictModel):
    """Where a partner drops files, and how we trust and read that server."""

    kind: Literal["sftp"] = "sftp"
    host: str
    port: int = Field(22, ge=1, le=65535)
    username: str
    remote_dir: str
    glob: str
    host_keys: list[str] = Field(
        min_length=1,
        description="Pinned OpenSSH public host keys ('ssh-ed25519 AAAA…'); others are refused.",
    )
    private_key: SecretRef
    private_key_passphrase: SecretRef | None = None
    stable_seconds: float = Field(5.0, ge=0, description="Pause between the two listings.")
    min_age_seconds: float = Field(60.0, ge=0, description="A file must be at least this old.")
    processed_dir: str | None = Field(None, description="Move fetched files here after success.")
    connect_timeout_seconds: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=10)


class LocalSourceConfig(StrictModel):
    """A local folder standing in for a partner's server (tests and dry runs)."""

    kind: Literal["local"] = "local"
    path: Path
    glob: str
    stable_seconds: float = Field(0.0, ge=0)
    min_age_seconds: float = Field(0.0, ge=0)
    processed_dir: Path | None = None


SourceConfig = Annotated[SftpSourceConfig | LocalSourceConfig, Field(discriminator="kind")]


class PgpConfig(StrictModel):
    """Our decryption key and the partner's pinned signing keys."""

    engine: Literal["gnupg", "pgpy"] = "gnupg"
    private_key: SecretRef
    passphrase: SecretRef | None = None
    partner_public_keys: list[SecretRef] = Field(min_length=1)
    max_plaintext_bytes: int = Field(4 * 1024**3, gt=0)
    max_compression_ratio: float = Field(200.0, gt=1)
    key_expiry_warning_days: int = Field(30, ge=0)


class HeaderRecordConfig(StrictModel):
    """A control record before the column header, e.g. 'H|<sender>|<yyyymmdd>|<row count>'."""

    prefix: str = Field("H", min_length=1, description="First field of the control record.")
    count_field: int = Field(4, ge=2, description="1-based field holding the data row count.")
    sender_field: int | None = Field(2, ge=2, description="1-based field naming the sender.")
    expected_sender: str | None = Field(
        None, description="When set, a file from any other sender is refused whole."
    )


class FormatConfig(StrictModel):
    """Delimited text: CSV, pipe-delimited and the like."""

    kind: Literal["delimited"] = "delimited"
    delimiter: str = Field(",", min_length=1, max_length=1)
    encoding: Literal["utf-8", "latin-1"] = "utf-8"
    quoting: Literal["rfc4180", "none"] = "rfc4180"
    header: bool = True
    header_record: HeaderRecordConfig | None = Field(
        None, description="A control record with the row count before the column header."
    )
    trailer_prefix: str | None = Field(
        "TRAILER", description="First field of an optional last record '<prefix>,<count>'."
    )
    trim_trailing_whitespace: bool = Field(
        False, description="Strip spaces and tabs at the end of every field (spec says so)."
    )


class Hl7v2FormatConfig(StrictModel):
    """HL7 v2 batch files: FHS/BHS … BTS/FTS around ORU^R01 messages, one row per OBX."""

    kind: Literal["hl7v2"] = "hl7v2"
    encoding: Literal["utf-8", "latin-1"] = "utf-8"
    require_batch_envelope: bool = Field(
        True, description="Refuse a file without BHS/BTS (the BTS count is the trailer check)."
    )


def _format_kind(value: object) -> str:
    # `kind` may be left out: a format without one is delimited (the first format we had).
    if isinstance(value, dict):
        return str(value.get("kind", "delimited"))
    return str(getattr(value, "kind", "delimited"))


AnyFormatConfig = Annotated[
    Annotated[FormatConfig, Tag("delimited")] | Annotated[Hl7v2FormatConfig, Tag("hl7v2")],
    Discriminator(_format_kind),
]


class PostgresTargetConfig(StrictModel):
    """A PostgreSQL warehouse table loaded by COPY + upsert."""

    kind: Literal["postgres"] = "postgres"
    name: str = Field(pattern=NAME_PATTERN)
    url: SecretRef
    table: str = Field(pattern=NAME_PATTERN)
    db_schema: str = Field("public", pattern=NAME_PATTERN)
    columns: list[str] = Field(min_length=1)
    max_attempts: int = Field(5, ge=1, le=10)


class SqliteTargetConfig(StrictModel):
    """A SQLite table: the embedded default target."""

    kind: Literal["sqlite"] = "sqlite"
    name: str = Field(pattern=NAME_PATTERN)
    path: Path
    table: str = Field(pattern=NAME_PATTERN)
    columns: list[str] = Field(min_length=1)


class FhirTargetConfig(StrictModel):
    """A FHIR R4 server: rows as resources in transaction Bundles, idempotent by identifier."""

    kind: Literal["fhir"] = "fhir"
    name: str = Field(pattern=NAME_PATTERN)
    base_url: str = Field(
        description="FHIR base, e.g. https://fhir.example/r4 (https unless loopback)."
    )
    token_url: str | None = Field(None, description="OAuth2 token endpoint (client credentials).")
    client_id: str | None = None
    client_secret: SecretRef | None = None
    scope: str | None = None
    identifier_system: str = Field(
        description="URI naming our identifiers, e.g. urn:batchbridge:acme_lab:lab_results."
    )
    patient_identifier_system: str = Field(
        "urn:batchbridge:patient-key",
        description="System of the pseudonymous patient key used in Patient references.",
    )
    columns: list[str] = Field(min_length=1)
    bundle_size: int = Field(200, ge=1, le=5000)
    compare_before_write: bool = Field(
        True,
        description=(
            "Search each Bundle's resources first and send only rows that differ, so a rerun "
            "writes no new versions (servers that report SUCCESSFUL_UPDATE_NO_CHANGE, like "
            "HAPI, may turn it off to save the searches)."
        ),
    )
    max_attempts: int = Field(5, ge=1, le=10)
    max_retry_after_seconds: float = Field(60.0, gt=0)
    timeout_seconds: float = Field(30.0, gt=0)


class OutboundPgpConfig(StrictModel):
    """Encrypt the extract to the receiver's key(s) and, optionally, sign it with ours."""

    recipient_public_keys: list[SecretRef] = Field(min_length=1)
    signing_key: SecretRef | None = None
    signing_passphrase: SecretRef | None = None


class SftpTargetConfig(StrictModel):
    """A partner's SFTP server receiving one extract file per source file."""

    kind: Literal["sftp"] = "sftp"
    name: str = Field(pattern=NAME_PATTERN)
    host: str
    port: int = Field(22, ge=1, le=65535)
    username: str
    remote_dir: str
    host_keys: list[str] = Field(min_length=1)
    private_key: SecretRef
    private_key_passphrase: SecretRef | None = None
    file_name: str = Field(
        "{feed}_{source_stem}.{ext}",
        description="Remote name; placeholders {tenant} {feed} {source_stem} {file_id} {ext}.",
    )
    file_format: Literal["csv", "parquet"] = "csv"
    pgp: OutboundPgpConfig | None = None
    columns: list[str] = Field(min_length=1)
    connect_timeout_seconds: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=10)


TargetConfig = Annotated[
    PostgresTargetConfig | SqliteTargetConfig | FhirTargetConfig | SftpTargetConfig,
    Field(discriminator="kind"),
]


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_WEEKDAYS: list[Weekday] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class ArrivalWindow(StrictModel):
    """When the partner's file must be on the server (their SLA), in the feed's time zone."""

    expected_by: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM local time")
    days: list[Weekday] = Field(default_factory=lambda: list(ALL_WEEKDAYS), min_length=1)


class AlertsConfig(StrictModel):
    """Where alerts go and what raises one. Alert texts carry names, counts and reasons only."""

    webhook: SecretRef | None = Field(
        None,
        description="Slack/Teams-compatible incoming webhook URL (a secret: it holds a token).",
    )
    arrival: ArrivalWindow | None = None
    quarantine_rate_threshold: float = Field(
        0.05, ge=0, le=1, description="Alert when quarantined/read exceeds this for a file."
    )


class ContractWindow(StrictModel):
    """A daily window in the feed's time zone; `end` before `start` wraps past midnight."""

    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM local time")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM local time")


class FileContractConfig(StrictModel):
    """What a partner's file must be before any of it is processed (checked per file).

    A file breaking its contract fails whole with the clause it broke; nothing loads.
    """

    name_pattern: str | None = Field(
        None, description="Regular expression the whole remote name must match."
    )
    min_bytes: int | None = Field(None, ge=0)
    max_bytes: int | None = Field(None, gt=0)
    arrival_window: ContractWindow | None = Field(
        None, description="The file's modification time must fall in this local window."
    )
    require_row_count: bool = Field(
        False, description="The header record or trailer must declare the row count."
    )
    marker: Literal["none", "done", "manifest"] = Field(
        "none",
        description="done: '<name>.done' must exist beside the file; manifest: "
        "'<name>.manifest' must exist and hold the file's sha256 (sha256sum format).",
    )

    @field_validator("name_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc.msg})") from None
        return value
