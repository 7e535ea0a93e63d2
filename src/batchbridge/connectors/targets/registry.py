"""The explicit registry of target kinds: config model in, connected Target out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchbridge.config import (
    FhirTargetConfig,
    LoadedFeed,
    PostgresTargetConfig,
    SqliteTargetConfig,
    TargetConfig,
)
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.targets.base import Target
from batchbridge.connectors.targets.fhir import FhirTarget, build_fhir_target
from batchbridge.connectors.targets.postgres import PostgresTarget
from batchbridge.connectors.targets.sftp_out import open_sftp_target
from batchbridge.connectors.targets.sqlite import SqliteTarget
from batchbridge.errors import ConfigError
from batchbridge.validations.base import SupportsFhir
from batchbridge.validations.registry import get_schema

__all__ = ["TARGET_KINDS", "open_fhir_target", "open_target"]


def _open_postgres(loaded: LoadedFeed, config: PostgresTargetConfig) -> Target:
    # The URL holds the password: resolved here, at the point of use, and kept wrapped.
    url = resolve_secret(config.url, base_dir=loaded.base_dir)
    return PostgresTarget(
        name=config.name,
        url=url,
        table=config.table,
        db_schema=config.db_schema,
        columns=config.columns,
        max_attempts=config.max_attempts,
    )


def _open_sqlite(loaded: LoadedFeed, config: SqliteTargetConfig) -> Target:
    return SqliteTarget(
        name=config.name,
        path=loaded.resolve_path(config.path),
        table=config.table,
        columns=config.columns,
    )


def open_fhir_target(loaded: LoadedFeed, config: FhirTargetConfig) -> FhirTarget:
    """Build the FHIR target a feed's config describes (its schema must support FHIR).

    The feed's schema is resolved here and handed to the FHIR package as what it
    needs (a `SupportsFhir` and its natural key), so the target never looks it up.
    """
    schema = get_schema(loaded.config.schema_name)
    if not isinstance(schema, SupportsFhir):
        raise ConfigError(
            f"target {config.name}: schema {loaded.config.schema_name!r} cannot express "
            "its rows as FHIR resources (no fhir_resources)"
        )
    return build_fhir_target(
        config, schema, natural_key=schema.natural_key, base_dir=loaded.base_dir
    )


TARGET_KINDS: dict[str, Callable[[LoadedFeed, Any], Target]] = {
    "postgres": _open_postgres,
    "sqlite": _open_sqlite,
    "fhir": open_fhir_target,
    "sftp": open_sftp_target,
}
"""Target kind (the `kind:` of a feed's target) -> factory taking the feed and that config."""


def open_target(loaded: LoadedFeed, target: TargetConfig) -> Target:
    """Build the Target a feed's target config describes; unknown kinds name the valid ones."""
    kind = getattr(target, "kind", None)
    factory = TARGET_KINDS.get(kind) if isinstance(kind, str) else None
    if factory is None:
        valid = ", ".join(sorted(TARGET_KINDS))
        raise ConfigError(f"target {getattr(target, 'name', '?')}: unknown kind {kind!r} ({valid})")
    return factory(loaded, target)
