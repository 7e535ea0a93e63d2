"""Secret references in feed configs: the `SecretRef` type and one walk over every use of it.

Config holds references (`env:NAME`, `file:PATH`, `prefect-secret:BLOCK`), never values.
`secret_references` finds every field declared as a `SecretRef`, however deep, so
`feeds check`, the health check and onboarding list the same secrets a run will resolve.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, Field

SECRET_REF_PATTERN = re.compile(r"^(env|file|prefect-secret):\S+$")


class _SecretMarker:
    """Tags a string field as a secret reference (found by `secret_references`)."""

    def __repr__(self) -> str:
        return "SECRET_REF"


SECRET_REF = _SecretMarker()

SecretRef = Annotated[
    str,
    Field(
        pattern=SECRET_REF_PATTERN.pattern,
        description="A reference to a secret: env:NAME, file:PATH or prefect-secret:NAME.",
    ),
    SECRET_REF,
]


@dataclass(frozen=True)
class SecretUse:
    """One secret reference and where in the config it sits (`targets.warehouse.url`)."""

    where: str
    ref: str


def _declares_secret(annotation: Any, metadata: list[Any]) -> bool:
    if any(item is SECRET_REF for item in metadata):
        return True
    pending = [annotation]
    while pending:
        current = pending.pop()
        if get_origin(current) is Annotated and any(
            item is SECRET_REF for item in getattr(current, "__metadata__", ())
        ):
            return True
        pending += list(get_args(current))
    return False


def _label(item: object, index: int) -> str:
    name = getattr(item, "name", None)
    return name if isinstance(name, str) else str(index)


def secret_references(model: BaseModel, prefix: str = "") -> Iterator[SecretUse]:
    """Every secret reference in `model`, in declaration order, with its dotted place."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        where = f"{prefix}{field.alias or name}"
        if value is None:
            continue
        if _declares_secret(field.annotation, field.metadata):
            for ref in value if isinstance(value, list) else [value]:
                yield SecretUse(where, ref)
        elif isinstance(value, BaseModel):
            yield from secret_references(value, f"{where}.")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from secret_references(item, f"{where}.{_label(item, index)}.")
