"""Where feed schemas come from: a feed YAML's `schema:` names a schema module.

A schema named `x` is the `SCHEMA` object of module `batchbridge.validations.x`, or of
the module an installed package registers under the `batchbridge.schemas` entry-point
group (so a partner-specific schema can ship outside this package). Adding a feed kind
is one module: no list here to edit.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from batchbridge.config import NAME_PATTERN
from batchbridge.errors import ConfigError

if TYPE_CHECKING:
    # Only for annotations: importing the registry must not load polars (fast CLI views).
    from batchbridge.validations.base import FeedSchema

BUILTIN_PACKAGE = "batchbridge.validations.schemas"
ENTRY_POINT_GROUP = "batchbridge.schemas"


def _is_schema(candidate: object, name: str) -> bool:
    return getattr(candidate, "name", None) == name and callable(
        getattr(candidate, "validate", None)
    )


@cache
def get_schema(name: str) -> FeedSchema:
    """The schema registered as `name`; ConfigError naming the valid ones otherwise."""
    if re.fullmatch(NAME_PATTERN, name):
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                schema = ep.load()
                if _is_schema(schema, name):
                    return schema  # type: ignore[no-any-return]
                raise ConfigError(f"entry point {name!r} is not a feed schema named {name!r}")
        try:
            module = importlib.import_module(f"{BUILTIN_PACKAGE}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{BUILTIN_PACKAGE}.{name}":
                raise
        else:
            found: FeedSchema | None = getattr(module, "SCHEMA", None)
            if found is not None and _is_schema(found, name):
                return found
    known = ", ".join(known_schemas()) or "none"
    raise ConfigError(f"unknown schema {name!r} (known schemas: {known})")


def known_schemas() -> list[str]:
    """Names of every schema module shipped here or registered by an installed package."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    names = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for folder in package.__path__:
        for path in Path(folder).glob("*.py"):
            module = importlib.import_module(f"{BUILTIN_PACKAGE}.{path.stem}")
            if _is_schema(getattr(module, "SCHEMA", None), path.stem):
                names.add(path.stem)
    return sorted(names)
