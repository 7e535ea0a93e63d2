"""FHIR R4 target: rows as resources in transaction Bundles, idempotent by identifier."""

from __future__ import annotations

from batchbridge.config import FhirTargetConfig, LoadedFeed
from batchbridge.connectors.targets.base import Target
from batchbridge.errors import ConfigError


def open_fhir_target(loaded: LoadedFeed, config: FhirTargetConfig) -> Target:
    """Build the FHIR target a feed's config describes."""
    raise ConfigError(f"target {config.name}: the fhir target is not built yet")
