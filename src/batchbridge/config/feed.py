"""A whole feed: its schedule, its sections, and the loaded YAML with the folder it came from."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from batchbridge.config.secret_refs import SecretRef
from batchbridge.config.sections import (
    NAME_PATTERN,
    AlertsConfig,
    AnyFormatConfig,
    FileContractConfig,
    FormatConfig,
    PgpConfig,
    SourceConfig,
    StrictModel,
    TargetConfig,
)

CRON_FIELDS = "minute hour day-of-month month day-of-week"

CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The @-names Prefect's scheduler accepts, as the five fields they stand for."""


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a cron schedule Prefect will run, or None when it is one.

    cronsim parses here because it is small and already installed with Prefect (Prefect
    itself parses with a vendored croniter, too slow to import at every command start).
    What cronsim accepts and croniter reads differently or refuses is refused too, so a
    feed that loads is a feed that deploys.
    """
    fields = CRON_ALIASES.get(expression.strip(), expression).split()
    if len(fields) != 5:
        # cronsim reads a sixth field as leading seconds, croniter as trailing seconds.
        return f"expected 5 fields ({CRON_FIELDS}), found {len(fields)}"
    try:
        CronSim(" ".join(fields), datetime(2000, 1, 1))
    except CronSimError as exc:
        return f"{str(exc).lower()} field"
    if "W" in fields[2].upper():
        return "'LW' (last weekday) in day-of-month is not supported by Prefect"
    if "L" in fields[4].upper():
        return "'<day>L' (last such weekday) in day-of-week is not supported by Prefect"
    return None


def known_zone(value: str) -> str:
    """`value` when it names an IANA time zone (e.g. Europe/Berlin); ValueError otherwise."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # OSError too: a folder of the zone database ("America") is not a zone.
        raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. Europe/Berlin)") from exc
    return value


class ScheduleConfig(StrictModel):
    """When the nightly run starts, in the feed's time zone."""

    cron: str = Field(description=f"Five cron fields: {CRON_FIELDS}, e.g. '0 2 * * *'.")
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        problem = cron_problem(value)
        if problem is not None:
            raise ValueError(f"not a cron schedule: {problem}; e.g. '0 2 * * *' is 02:00 daily")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)


class FeedConfig(StrictModel):
    """One partner feed: everything needed to run it, secrets by reference only."""

    feed: str = Field(pattern=NAME_PATTERN)
    tenant: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    schema_name: str = Field(alias="schema", pattern=NAME_PATTERN)
    timezone: str = Field("UTC", description="Zone of naive timestamps in the partner's files.")
    source: SourceConfig
    pgp: PgpConfig
    format: AnyFormatConfig = FormatConfig()
    full_snapshot: bool = Field(
        False,
        description="Each file lists every current record of the tenant: records absent "
        "from it are marked inactive in the targets (never deleted).",
    )
    mappings: dict[str, Path] = Field(default_factory=dict)
    pseudonym_key: SecretRef
    quarantine_key: SecretRef
    quarantine_previous_keys: list[SecretRef] = Field(
        default_factory=list,
        description="Keys of rows encrypted before a rotation; kept until `keys rotate` ran.",
    )
    targets: list[TargetConfig] = Field(min_length=1)
    parallel_files: int = Field(
        1,
        ge=1,
        le=16,
        description="Files of one run processed at once (threads), each with its own "
        "SFTP and target connections; 1 processes them in order.",
    )
    schedule: ScheduleConfig | None = None
    alerts: AlertsConfig = AlertsConfig()
    contract: FileContractConfig = FileContractConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    @field_validator("targets")
    @classmethod
    def _unique_target_names(cls, value: list[TargetConfig]) -> list[TargetConfig]:
        names = [target.name for target in value]
        if len(names) != len(set(names)):
            raise ValueError("target names must be unique within a feed")
        return value


class LoadedFeed(BaseModel):
    """A validated feed plus the folder its relative paths are resolved against."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: FeedConfig
    path: Path

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths (mappings, file: secrets) start from."""
        return self.path.parent

    def resolve_path(self, path: Path) -> Path:
        """Resolve a path written in the YAML relative to the YAML's own folder."""
        return path if path.is_absolute() else (self.base_dir / path).resolve()
