"""Confirming a FHIR load: how many of its resources the server holds, found by identifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import httpx

from batchbridge.connectors.targets.fhir.wire import (
    issue_code,
    json_or_none,
    next_link,
    search_token,
)
from batchbridge.errors import TargetError
from batchbridge.validations.base import FhirResource

CONFIRM_CHUNK = 50
"""Identifiers per confirmation search (keeps the URL well under common 8 KiB limits)."""
_MAX_PAGES = 100


class HttpCall(Protocol):
    """The target's request function: retries, token and error mapping included."""

    def __call__(
        self, what: str, method: str, url: str, *, params: Mapping[str, str] | None = None
    ) -> httpx.Response: ...


def count_present(
    resources: Sequence[FhirResource], *, call: HttpCall, base_url: str, target: str
) -> int:
    """How many of `resources` the server at `base_url` holds, found by their identifiers."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for item in resources:
        key = (str(item.resource.get("resourceType")), item.identifier_system)
        wanted.setdefault(key, set()).add(item.identifier)
    present = 0
    for (resource_type, system), values in wanted.items():
        ordered = sorted(values)
        for start in range(0, len(ordered), CONFIRM_CHUNK):
            chunk = ordered[start : start + CONFIRM_CHUNK]
            found = _search_identifiers(call, base_url, target, resource_type, system, chunk)
            present += len(found.intersection(chunk))
    return present


def _search_identifiers(
    call: HttpCall, base_url: str, target: str, resource_type: str, system: str, values: list[str]
) -> set[str]:
    """Identifier values (under `system`) of the `resource_type` resources matching `values`."""
    found: set[str] = set()
    for resource in search_by_identifier(
        call,
        base_url,
        target,
        resource_type,
        system,
        values,
        elements="identifier",
        purpose="confirm",
    ):
        found.update(identifier_values(resource, system))
    return found


def identifier_values(resource: Mapping[str, Any], system: str) -> list[str]:
    """The values of `resource`'s identifiers under `system`."""
    identifiers = resource.get("identifier")
    return [
        str(identifier.get("value"))
        for identifier in (identifiers if isinstance(identifiers, list) else [])
        if isinstance(identifier, dict) and identifier.get("system") == system
    ]


def search_by_identifier(
    call: HttpCall,
    base_url: str,
    target: str,
    resource_type: str,
    system: str,
    values: Sequence[str],
    *,
    elements: str | None = None,
    purpose: str = "search",
) -> list[dict[str, Any]]:
    """The `resource_type` resources with an identifier `system|value` for any of `values`.

    One search (paged on the same server); `elements` asks for a subset, which servers
    may ignore (Medplum does), so callers never rely on it.
    """
    params: dict[str, str] | None = {
        "identifier": ",".join(search_token(system, value) for value in values),
        "_count": str(len(values) * 2),
    }
    if elements is not None and params is not None:
        params["_elements"] = elements
    url: str = f"{base_url}/{resource_type}"
    found: list[dict[str, Any]] = []
    what = f"{purpose} {resource_type} ({len(values)} identifiers)"
    for _page in range(_MAX_PAGES):
        response = call(what, "GET", url, params=params)
        body = json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise TargetError(
                f"target {target}: {what}: HTTP {response.status_code} ({issue_code(response)})"
            )
        for entry in body.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if (
                isinstance(resource, dict)
                and resource.get("resourceType", resource_type) == resource_type
            ):
                found.append(resource)
        next_url = next_link(body, base_url, target)
        if next_url is None:
            return found
        # The next link carries the query: params (even empty ones) would replace it.
        url, params = next_url, None
    raise TargetError(f"target {target}: {purpose} search paged past {_MAX_PAGES} pages")
