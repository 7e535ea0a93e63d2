"""What the FHIR target and its token client say on the wire: URLs, search tokens, answers."""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from batchbridge.errors import ConfigError, TargetError, TransientTargetError

FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses a later try may cure (the server is busy or a gateway lost it)."""

_ISSUE_CODE = re.compile(r"^[a-z][a-z-]{0,39}$")  # FHIR IssueType codes
_LOOPBACK_NAMES = frozenset({"localhost"})


class HttpCall(Protocol):
    """The target's request function: retries, token and error mapping included."""

    def __call__(
        self,
        what: str,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response: ...


class TransientHttpError(TransientTargetError):
    """A failure a later try may cure, with the wait the server asked for (Retry-After).

    The retry layer reads `retry_after`; after its last attempt it raises this class
    again, saying so (hence `reason` in the constructor).
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_fhir_url(url: str, what: str, target: str) -> httpx.URL:
    """Parse `url`: https, or plain http only to a loopback host (tests, a local sidecar).

    Bearer tokens and patient data must not cross a network in clear.
    """
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError):
        raise ConfigError(f"target {target}: {what} is not a valid URL") from None
    if parsed.host and (
        parsed.scheme == "https" or (parsed.scheme == "http" and _is_loopback(parsed.host))
    ):
        return parsed
    raise ConfigError(
        f"target {target}: {what} must be an https:// URL (http:// only to a loopback host)"
    )


def _escape(part: str) -> str:
    for char in ("\\", ",", "|", "$"):
        part = part.replace(char, f"\\{char}")
    return part


def search_token(system: str, value: str) -> str:
    """A token search value `system|value` with FHIR escaping (not yet URL-encoded)."""
    return f"{_escape(system)}|{_escape(value)}"


def match_url(resource_type: str, system: str, value: str) -> str:
    """`Type?identifier=system|value`: the conditional URL of the resource with that identifier."""
    token = urllib.parse.quote(search_token(system, value), safe=":/|\\")
    return f"{resource_type}?identifier={token}"


def json_or_none(response: httpx.Response) -> Any:
    """The answer's JSON body, or None when it has none."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def issue_code(response: httpx.Response) -> str:
    """The first issue's code of an OperationOutcome answer ('unknown' when there is none).

    Only the code: an issue's diagnostics may quote the content that was refused.
    """
    body = json_or_none(response)
    issues = body.get("issue") if isinstance(body, dict) else None
    if isinstance(issues, list):
        for issue in issues:
            code = issue.get("code") if isinstance(issue, dict) else None
            if isinstance(code, str) and _ISSUE_CODE.match(code):
                return code
    return "unknown"


def next_link(bundle: Mapping[str, Any], base_url: str, target: str) -> str | None:
    """The absolute URL of a search page's `next` link (relative ones resolved), or None.

    Only links to the server `base_url` is on are followed: our token goes nowhere else.
    """
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            base = httpx.URL(base_url)
            try:
                url = base.join(str(link.get("url", "")))
            except httpx.InvalidURL:
                raise TargetError(f"target {target}: a search page's next link is no URL") from None
            if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
                raise TargetError(
                    f"target {target}: a search page links to another server; not followed"
                )
            return str(url)
    return None
