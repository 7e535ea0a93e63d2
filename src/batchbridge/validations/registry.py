"""Explicit registry of feed schemas: a feed YAML's `schema:` names one of these."""

from __future__ import annotations

from batchbridge.errors import ConfigError
from batchbridge.validations.base import FeedSchema
from batchbridge.validations.lab_results import LAB_RESULTS

SCHEMAS: dict[str, FeedSchema] = {
    LAB_RESULTS.name: LAB_RESULTS,
}


def get_schema(name: str) -> FeedSchema:
    """The schema registered as `name`; ConfigError naming the valid ones otherwise."""
    try:
        return SCHEMAS[name]
    except KeyError:
        known = ", ".join(sorted(SCHEMAS)) or "none"
        raise ConfigError(f"unknown schema {name!r} (known schemas: {known})") from None
