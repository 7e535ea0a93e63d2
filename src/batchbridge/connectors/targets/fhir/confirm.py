"""Confirming a FHIR load: how many of its resources the server holds, found by identifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import httpx

from batchbridge.connectors.targets.fhir.wire import issue_code, json_or_none, search_token
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
    params = {
        "identifier": ",".join(search_token(system, value) for value in values),
        "_elements": "identifier",
        "_count": str(len(values) * 2),
    }
    url: str = f"{base_url}/{resource_type}"
    found: set[str] = set()
    for _page in range(_MAX_PAGES):
        what = f"confirm {resource_type} ({len(values)} identifiers)"
        response = call(what, "GET", url, params=params)
        body = json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise TargetError(
                f"target {target}: {what}: HTTP {response.status_code} ({issue_code(response)})"
            )
        for entry in body.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            identifiers = resource.get("identifier") if isinstance(resource, dict) else None
            for identifier in identifiers if isinstance(identifiers, list) else []:
                if isinstance(identifier, dict) and identifier.get("system") == system:
                    found.add(str(identifier.get("value")))
        next_url = _next_link(body, base_url, target)
        if next_url is None:
            return found
        url, params = next_url, {}
    raise TargetError(f"target {target}: confirmation search paged past {_MAX_PAGES} pages")


def _next_link(bundle: Mapping[str, Any], base_url: str, target: str) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = str(link.get("url", ""))
            base = httpx.URL(base_url)
            parsed = httpx.URL(url)
            # Our token goes only where the base URL points.
            if (parsed.scheme, parsed.host, parsed.port) != (base.scheme, base.host, base.port):
                raise TargetError(
                    f"target {target}: a search page links to another server; not followed"
                )
            return url
    return None
