"""A whole feed: its schedule, its sections, and the loaded YAML with the folder it came from."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


class ScheduleConfig(StrictModel):
    """When the nightly run starts, in the feed's time zone."""

    cron: str
    timezone: str = "UTC"


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
    schedule: ScheduleConfig | None = None
    alerts: AlertsConfig = AlertsConfig()
    contract: FileContractConfig = FileContractConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

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
