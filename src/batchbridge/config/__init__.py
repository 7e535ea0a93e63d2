"""Configuration: strict models of a partner feed YAML, its loader, secret references.

feed, sections and loader read a feed YAML (unknown keys are errors); secret_refs
parses secret references, resolved elsewhere at the point of use; settings reads the
process-wide BATCHBRIDGE_* environment; stewards reads the stewards directory
(stewards.yaml). Everything here is pure (pydantic, YAML, cronsim): it may import only
errors, crashpoints and progress, the floor below every room.
"""

from batchbridge.config.feed import FeedConfig, LoadedFeed, ScheduleConfig
from batchbridge.config.loader import feed_path, list_feeds, load_feed, load_feed_file
from batchbridge.config.secret_refs import (
    SECRET_REF_PATTERN,
    SecretRef,
    SecretUse,
    secret_references,
)
from batchbridge.config.sections import (
    ALL_WEEKDAYS,
    NAME_PATTERN,
    UNPINNED_HOST_KEY,
    AlertsConfig,
    AnyFormatConfig,
    ArrivalWindow,
    ContractWindow,
    FhirTargetConfig,
    FileContractConfig,
    FormatConfig,
    HeaderRecordConfig,
    Hl7v2FormatConfig,
    LocalSourceConfig,
    OutboundPgpConfig,
    PgpConfig,
    PostgresTargetConfig,
    SftpSourceConfig,
    SftpTargetConfig,
    SourceConfig,
    SqliteTargetConfig,
    StrictModel,
    TargetConfig,
    Weekday,
)

__all__ = [
    "ALL_WEEKDAYS",
    "NAME_PATTERN",
    "SECRET_REF_PATTERN",
    "UNPINNED_HOST_KEY",
    "AlertsConfig",
    "AnyFormatConfig",
    "ArrivalWindow",
    "ContractWindow",
    "FeedConfig",
    "FhirTargetConfig",
    "FileContractConfig",
    "FormatConfig",
    "HeaderRecordConfig",
    "Hl7v2FormatConfig",
    "LoadedFeed",
    "LocalSourceConfig",
    "OutboundPgpConfig",
    "PgpConfig",
    "PostgresTargetConfig",
    "ScheduleConfig",
    "SecretRef",
    "SecretUse",
    "SftpSourceConfig",
    "SftpTargetConfig",
    "SourceConfig",
    "SqliteTargetConfig",
    "StrictModel",
    "TargetConfig",
    "Weekday",
    "feed_path",
    "list_feeds",
    "load_feed",
    "load_feed_file",
    "secret_references",
]
