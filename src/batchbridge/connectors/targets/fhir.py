"""FHIR R4 target: rows as resources in transaction Bundles, idempotent by identifier.

How a load goes:
- The feed's schema (`SupportsFhir`) turns the rows (only the target's `columns`) into
  one resource per row plus supporting resources (Patient stubs).
- Rows go in `transaction` Bundles of `bundle_size`. Each Bundle also carries the
  supporting resources its rows refer to, as conditional creates (`POST` with
  `ifNoneExist: identifier=<system>|<value>`); each row is a conditional update
  (`PUT <Type>?identifier=<system>|<value>`). Sending a Bundle again (a rerun, or a
  retry after a timeout whose answer was lost) therefore never duplicates anything.
- Counts come from the transaction-response: `201` inserted; `200` updated, or
  unchanged when the entry's outcome carries HAPI's storage response code
  `SUCCESSFUL_UPDATE_NO_CHANGE` (HAPI keeps the version when the content is identical;
  our test server does the same). A server that gives no such signal has its no-op
  updates counted as updated: the counts still balance.
- A transaction is atomic, so one invalid row fails its Bundle with a 4xx. The Bundle
  is then bisected until the refused rows stand alone; each becomes a RowRejection
  `http_<status>:<issue code>` (never the diagnostics: servers quote values there).
- After the load, the accepted rows' identifiers are searched for (`_elements=identifier`)
  and counted: `rows_confirmed`.
- Retries (tenacity) only on connection errors, timeouts, 429, 502, 503 and 504, waiting
  what Retry-After asks (capped) or backing off; never on other statuses.
- OAuth2 client credentials (RFC 6749 §4.4): a bearer token from `token_url`, cached
  until shortly before it expires and fetched again once when the server answers 401.

Errors name the target, the step, status codes, counts and row numbers; never a value,
a response body, the token or the client secret.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx
import polars as pl
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from batchbridge.config import FhirTargetConfig, LoadedFeed
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.targets.base import LoadRequest, LoadResult, RowRejection
from batchbridge.connectors.targets.rows import check_load_request
from batchbridge.connectors.webhook import parse_retry_after
from batchbridge.errors import ConfigError, TargetError, TransientTargetError
from batchbridge.validations.base import ROW_COLUMN, FhirIdentity, FhirResource, SupportsFhir
from batchbridge.validations.registry import get_schema

__all__ = [
    "NO_CHANGE_CODES",
    "STORAGE_RESPONSE_SYSTEM",
    "ClientCredentials",
    "FhirTarget",
    "check_fhir_url",
    "open_fhir_target",
]

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
STORAGE_RESPONSE_SYSTEM = "https://hapifhir.io/fhir/CodeSystem/hapi-fhir-storage-response-code"
NO_CHANGE_CODES = frozenset({"SUCCESSFUL_UPDATE_NO_CHANGE"})
"""Codes (under STORAGE_RESPONSE_SYSTEM) by which a server says an update changed nothing."""

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
# A transaction refused for its content: some entry is invalid, so bisecting finds it.
# Other 4xx (401, 403, 404, 405, 413, 415…) are about the request, not a row.
_ROW_STATUSES = frozenset({400, 409, 412, 422})
_ISSUE_CODE = re.compile(r"^[a-z][a-z-]{0,39}$")  # FHIR IssueType codes
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")  # RFC 6749 error codes
_RESERVED = frozenset({ROW_COLUMN})
_LOOPBACK_NAMES = frozenset({"localhost"})
CONFIRM_CHUNK = 50
"""Identifiers per confirmation search (keeps the URL well under common 8 KiB limits)."""
_MAX_PAGES = 100


# -- URLs and search tokens ---------------------------------------------------------------


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


def _token(system: str, value: str) -> str:
    """A token search value `system|value` with FHIR escaping (not yet URL-encoded)."""
    return f"{_escape(system)}|{_escape(value)}"


def _match_url(resource_type: str, system: str, value: str) -> str:
    token = urllib.parse.quote(_token(system, value), safe=":/|\\")
    return f"{resource_type}?identifier={token}"


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _conditional_target(reference: str) -> tuple[str, str, str] | None:
    """(type, system, value) a `Type?identifier=system|value` reference points to, or None."""
    resource_type, mark, query = reference.partition("?")
    if not mark:
        return None
    values = urllib.parse.parse_qs(query).get("identifier", [])
    if len(values) != 1:
        return None
    parts = _split_unescaped(values[0], "|")
    if len(parts) != 2:
        return None
    return resource_type, parts[0], parts[1]


def _references(node: object) -> Iterator[str]:
    """Every `reference` string inside a resource."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


# -- OAuth2 client credentials -------------------------------------------------------------


class ClientCredentials:
    """Bearer tokens by the OAuth2 client-credentials grant, cached until shortly before expiry.

    The client authenticates with HTTP Basic (`client_secret_basic`, id and secret
    form-encoded first as RFC 6749 §2.3.1 asks). A refused grant is a TargetError with
    the HTTP status and the RFC error code only; the token endpoint's 429/5xx and
    connection errors are TransientTargetError (the caller retries).
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        target: str,
        scope: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.token_url = check_fhir_url(token_url, "token_url", target)
        self.scope = scope
        self._clock = clock
        basic = ":".join(
            urllib.parse.quote_plus(part) for part in (client_id, client_secret.get_secret_value())
        )
        self._authorization = SecretStr("Basic " + base64.b64encode(basic.encode()).decode())
        self._token: SecretStr | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.fetches = 0

    def __repr__(self) -> str:
        return f"ClientCredentials(target={self.target!r}, token_url={self.token_url.host!r})"

    def token(self, client: httpx.Client) -> str:
        """A valid access token: the cached one, or a new one from the token endpoint."""
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._token, lifetime = self._fetch(client)
                # Renew a little early so a token never expires in flight.
                self._expires_at = self._clock() + max(0.0, lifetime - min(30.0, lifetime / 10))
            return self._token.get_secret_value()

    def invalidate(self, token: str) -> None:
        """Forget `token` (the server refused it); a newer cached token is kept."""
        with self._lock:
            if self._token is not None and self._token.get_secret_value() == token:
                self._token = None

    def _fetch(self, client: httpx.Client) -> tuple[SecretStr, float]:
        where = f"target {self.target}: token endpoint at {self.token_url.host}"
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        try:
            response = client.post(
                self.token_url,
                data=form,
                headers={
                    "Authorization": self._authorization.get_secret_value(),
                    "Accept": "application/json",
                },
            )
        except httpx.TransportError as exc:
            raise _Retry(f"{where}: {type(exc).__name__}") from None
        self.fetches += 1
        status = response.status_code
        if status in _RETRY_STATUSES or status >= 500:
            raise _Retry(
                f"{where}: HTTP {status}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        body = _json_or_none(response)
        if status != 200:
            error = body.get("error") if isinstance(body, dict) else None
            code = f", {error}" if isinstance(error, str) and _OAUTH_ERROR.match(error) else ""
            raise TargetError(
                f"{where} refused the client credentials (HTTP {status}{code})",
                reason="target_auth_failed",
            )
        token = body.get("access_token") if isinstance(body, dict) else None
        kind = body.get("token_type", "") if isinstance(body, dict) else ""
        if not isinstance(token, str) or not token or str(kind).lower() != "bearer":
            raise TargetError(f"{where}: the answer holds no bearer access_token")
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 300.0
        return SecretStr(token), max(0.0, lifetime)


# -- the target ------------------------------------------------------------------------------


class _Retry(TransientTargetError):
    """A transient failure, with the wait the server asked for (never leaves this module)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Refused(Exception):
    """A transaction refused for its content (a row's fault): bisect."""

    def __init__(self, status: int, issue: str) -> None:
        super().__init__(f"http_{status}:{issue}")
        self.reason = f"http_{status}:{issue}"


@dataclass(frozen=True)
class _Unit:
    """One row's resource and the supporting resources (match URLs) it refers to."""

    row: int
    resource: FhirResource
    needs: tuple[str, ...]


@dataclass(frozen=True)
class _Plan:
    """A load's row units, the supporting resources by match URL, and those no row names."""

    units: list[_Unit]
    supporting: dict[str, FhirResource]
    orphans: tuple[str, ...]


@dataclass
class _Tally:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejections: list[RowRejection] = field(default_factory=list)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _issue_code(response: httpx.Response) -> str:
    """The first issue's code of an OperationOutcome answer ('unknown' when there is none)."""
    body = _json_or_none(response)
    issues = body.get("issue") if isinstance(body, dict) else None
    if isinstance(issues, list):
        for issue in issues:
            code = issue.get("code") if isinstance(issue, dict) else None
            if isinstance(code, str) and _ISSUE_CODE.match(code):
                return code
    return "unknown"


def _status_of(entry: object) -> int | None:
    response = entry.get("response") if isinstance(entry, dict) else None
    status = response.get("status") if isinstance(response, dict) else None
    match = re.match(r"^\s*(\d{3})\b", status) if isinstance(status, str) else None
    return int(match.group(1)) if match else None


def _reports_no_change(entry: object) -> bool:
    response = entry.get("response") if isinstance(entry, dict) else None
    outcome = response.get("outcome") if isinstance(response, dict) else None
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    for issue in issues if isinstance(issues, list) else []:
        details = issue.get("details") if isinstance(issue, dict) else None
        codings = details.get("coding") if isinstance(details, dict) else None
        for coding in codings if isinstance(codings, list) else []:
            if (
                isinstance(coding, dict)
                and coding.get("system") == STORAGE_RESPONSE_SYSTEM
                and coding.get("code") in NO_CHANGE_CODES
            ):
                return True
    return False


class FhirTarget:
    """Loads rows into a FHIR R4 server as resources, idempotently on their identifiers.

    See the module docstring for the protocol. `transport` (e.g. httpx.MockTransport)
    and `sleep` are for tests. The target is safe to share between threads.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        schema: SupportsFhir,
        identity: FhirIdentity,
        columns: Sequence[str],
        *,
        auth: ClientCredentials | None = None,
        bundle_size: int = 200,
        max_attempts: int = 5,
        max_retry_after: float = 60.0,
        timeout_seconds: float = 30.0,
        retry_initial_wait: float = 0.5,
        retry_max_wait: float = 10.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.base_url = str(check_fhir_url(base_url, "base_url", name)).rstrip("/")
        self.schema = schema
        self.identity = identity
        self.columns = tuple(dict.fromkeys(columns))
        reserved = sorted(_RESERVED.intersection(self.columns))
        if reserved:
            raise ConfigError(f"target {name}: columns {reserved} are reserved")
        if max_attempts < 1 or bundle_size < 1:
            raise ConfigError(f"target {name}: max_attempts and bundle_size must be at least 1")
        self.auth = auth
        self.bundle_size = bundle_size
        self.max_attempts = max_attempts
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._backoff = wait_exponential_jitter(
            multiplier=retry_initial_wait, max=retry_max_wait, jitter=retry_initial_wait
        )
        self._client = httpx.Client(
            timeout=timeout_seconds,
            verify=verify,
            transport=transport,
            follow_redirects=False,
            headers={"Accept": FHIR_JSON, "User-Agent": "batchbridge"},
        )

    def __repr__(self) -> str:
        return f"FhirTarget(name={self.name!r}, host={httpx.URL(self.base_url).host!r})"

    def __enter__(self) -> FhirTarget:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    # -- public API -------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadResult:
        """Send `request.rows` as conditional updates in transaction Bundles; count and confirm."""
        if request.full_snapshot:
            # Marking the server's other resources inactive would mean paging through
            # every resource under our identifier system; not done yet. The rows are
            # still upserted; the report shows 0 inactivated for this target.
            logger.warning(
                "target %s: full snapshot loaded as upserts; FHIR resources absent from "
                "the file are not marked inactive",
                self.name,
            )
        checked = check_load_request(self.name, request, self.columns, _RESERVED)
        plan = self._plan(checked.frame)
        tally = _Tally()
        units = plan.units
        for number, start in enumerate(range(0, len(units), self.bundle_size), start=1):
            chunk = units[start : start + self.bundle_size]
            # Supporting resources no row refers to travel with the first Bundle.
            self._send(plan, chunk, plan.orphans if start == 0 else (), tally, number)
        refused = {rejection.row for rejection in tally.rejections}
        confirmed = self.count_present([u.resource for u in units if u.row not in refused])
        return LoadResult(
            target=self.name,
            load_id=request.load_id,
            rows_inserted=tally.inserted,
            rows_updated=tally.updated,
            rows_unchanged=tally.unchanged,
            rows_rejected=len(tally.rejections),
            rows_confirmed=confirmed,
            rejections=tuple(sorted(tally.rejections, key=lambda r: r.row)),
        )

    def count_present(self, resources: Sequence[FhirResource]) -> int:
        """How many of `resources` the server holds, found by their identifiers."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for item in resources:
            key = (str(item.resource.get("resourceType")), item.identifier_system)
            wanted.setdefault(key, set()).add(item.identifier)
        present = 0
        for (resource_type, system), values in wanted.items():
            ordered = sorted(values)
            for start in range(0, len(ordered), CONFIRM_CHUNK):
                chunk = ordered[start : start + CONFIRM_CHUNK]
                found = self._search_identifiers(resource_type, system, chunk)
                present += len(found.intersection(chunk))
        return present

    def check_writable(self, tenant: str) -> datetime:
        """Prove the server speaks FHIR R4 and accepts a transaction from us; write nothing.

        GET /metadata (a CapabilityStatement for 4.0.x), then POST an empty transaction
        Bundle with our token: credentials, scope and the transaction endpoint all work.
        No resource is created (a clinical server is no place for canary rows).
        """
        checked_at = datetime.now(UTC)
        response = self._call("capability statement", "GET", f"{self.base_url}/metadata")
        body = _json_or_none(response)
        version = body.get("fhirVersion") if isinstance(body, dict) else None
        if response.status_code != 200 or not (
            isinstance(body, dict)
            and body.get("resourceType") == "CapabilityStatement"
            and isinstance(version, str)
            and version.startswith("4.0")
        ):
            raise TargetError(
                f"target {self.name}: /metadata answered HTTP {response.status_code} "
                "without a FHIR R4 (4.0.x) CapabilityStatement"
            )
        try:
            self._transaction(_Plan([], {}, ()), [], (), bundle=0)
        except _Refused as refused:
            raise TargetError(
                f"target {self.name}: an empty transaction was refused ({refused.reason})"
            ) from None
        return checked_at

    # -- building Bundles -------------------------------------------------------------------

    def _plan(self, frame: pl.DataFrame) -> _Plan:
        supporting: dict[str, FhirResource] = {}
        by_target: dict[tuple[str, str, str], str] = {}
        row_resources: list[FhirResource] = []
        for item in self.schema.fhir_resources(frame, self.identity):
            if item.row is None:
                resource_type = str(item.resource.get("resourceType"))
                url = _match_url(resource_type, item.identifier_system, item.identifier)
                supporting[url] = item
                by_target[(resource_type, item.identifier_system, item.identifier)] = url
            else:
                row_resources.append(item)
        rows = frame.get_column(ROW_COLUMN).to_list()
        if sorted(r.row for r in row_resources if r.row is not None) != sorted(rows):
            raise TargetError(
                f"target {self.name}: the schema made {len(row_resources)} resources "
                f"for {len(rows)} rows (one per row expected)"
            )
        identifiers = {
            (str(r.resource.get("resourceType")), r.identifier_system, r.identifier)
            for r in row_resources
        }
        if len(identifiers) != len(row_resources):
            raise TargetError(f"target {self.name}: rows of one load share a FHIR identifier")
        units: list[_Unit] = []
        referenced: set[str] = set()
        for item in row_resources:
            needs: list[str] = []
            for reference in _references(item.resource):
                found = _conditional_target(reference)
                match = by_target.get(found) if found is not None else None
                if match is not None and match not in needs:
                    needs.append(match)
            referenced.update(needs)
            units.append(_Unit(row=int(item.row or 0), resource=item, needs=tuple(needs)))
        orphans = tuple(url for url in supporting if url not in referenced)
        return _Plan(units=units, supporting=supporting, orphans=orphans)

    @staticmethod
    def _entries(
        plan: _Plan, units: Sequence[_Unit], orphans: Sequence[str]
    ) -> tuple[list[dict[str, Any]], int]:
        """Conditional creates of the supporting resources `units` need, then their updates."""
        creates = list(dict.fromkeys([url for unit in units for url in unit.needs]))
        creates += [url for url in orphans if url not in creates]
        entries: list[dict[str, Any]] = []
        for url in creates:
            item = plan.supporting[url]
            resource_type, _, query = url.partition("?")
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": item.resource,
                    "request": {"method": "POST", "url": resource_type, "ifNoneExist": query},
                }
            )
        for unit in units:
            item = unit.resource
            resource_type = str(item.resource.get("resourceType"))
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": item.resource,
                    "request": {
                        "method": "PUT",
                        "url": _match_url(resource_type, item.identifier_system, item.identifier),
                    },
                }
            )
        return entries, len(creates)

    # -- sending ------------------------------------------------------------------------------

    def _send(
        self,
        plan: _Plan,
        units: Sequence[_Unit],
        orphans: Sequence[str],
        tally: _Tally,
        bundle: int,
    ) -> None:
        """Send `units` in one transaction; bisect a refused one down to the refused rows."""
        try:
            outcomes = self._transaction(plan, units, orphans, bundle=bundle)
        except _Refused as refused:
            if len(units) == 1:
                tally.rejections.append(RowRejection(row=units[0].row, reason=refused.reason))
                return
            middle = len(units) // 2
            logger.info(
                "target %s: bundle %d (%d rows) refused (%s); bisecting",
                self.name,
                bundle,
                len(units),
                refused.reason,
            )
            self._send(plan, units[:middle], orphans, tally, bundle)
            self._send(plan, units[middle:], orphans, tally, bundle)
            return
        for outcome in outcomes:
            if outcome == "inserted":
                tally.inserted += 1
            elif outcome == "unchanged":
                tally.unchanged += 1
            else:
                tally.updated += 1

    def _transaction(
        self, plan: _Plan, units: Sequence[_Unit], orphans: Sequence[str], *, bundle: int
    ) -> list[str]:
        """POST one transaction; the outcome of each unit, or _Refused for a row's fault."""
        entries, offset = self._entries(plan, units, orphans)
        body = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        content = json.dumps(body, separators=(",", ":")).encode()
        what = f"bundle {bundle} ({len(units)} rows)"
        response = self._call(what, "POST", self.base_url, content=content)
        status = response.status_code
        if status in _ROW_STATUSES:
            raise _Refused(status, _issue_code(response))
        if status == 413:
            raise TargetError(
                f"target {self.name}: {what}: HTTP 413, the bundle is too large; lower bundle_size"
            )
        if not 200 <= status < 300:
            raise TargetError(
                f"target {self.name}: {what}: HTTP {status} ({_issue_code(response)}); not retried"
            )
        answer = _json_or_none(response)
        answered = answer.get("entry", []) if isinstance(answer, dict) else None
        if (
            not isinstance(answer, dict)
            or answer.get("type") != "transaction-response"
            or not isinstance(answered, list)
            or len(answered) != len(entries)
        ):
            raise TargetError(
                f"target {self.name}: {what}: the answer is not a transaction-response "
                f"with {len(entries)} entries"
            )
        outcomes: list[str] = []
        for position, entry in enumerate(answered[offset:], start=offset):
            code = _status_of(entry)
            if code == 201:
                outcomes.append("inserted")
            elif code == 200:
                outcomes.append("unchanged" if _reports_no_change(entry) else "updated")
            else:
                raise TargetError(
                    f"target {self.name}: {what}: entry {position} answered {code} "
                    "(expected 200 or 201)"
                )
        return outcomes

    def _search_identifiers(self, resource_type: str, system: str, values: list[str]) -> set[str]:
        """Identifier values (under `system`) of the `resource_type` resources matching `values`."""
        params = {
            "identifier": ",".join(_token(system, value) for value in values),
            "_elements": "identifier",
            "_count": str(len(values) * 2),
        }
        url: str = f"{self.base_url}/{resource_type}"
        found: set[str] = set()
        for _page in range(_MAX_PAGES):
            what = f"confirm {resource_type} ({len(values)} identifiers)"
            response = self._call(what, "GET", url, params=params)
            body = _json_or_none(response)
            if response.status_code != 200 or not isinstance(body, dict):
                raise TargetError(
                    f"target {self.name}: {what}: HTTP {response.status_code} "
                    f"({_issue_code(response)})"
                )
            for entry in body.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                identifiers = resource.get("identifier") if isinstance(resource, dict) else None
                for identifier in identifiers if isinstance(identifiers, list) else []:
                    if isinstance(identifier, dict) and identifier.get("system") == system:
                        found.add(str(identifier.get("value")))
            next_url = self._next_link(body)
            if next_url is None:
                return found
            url, params = next_url, {}
        raise TargetError(f"target {self.name}: confirmation search paged past {_MAX_PAGES} pages")

    def _next_link(self, bundle: Mapping[str, Any]) -> str | None:
        for link in bundle.get("link") or []:
            if isinstance(link, dict) and link.get("relation") == "next":
                url = str(link.get("url", ""))
                base = httpx.URL(self.base_url)
                parsed = httpx.URL(url)
                # Our token goes only where the base URL points.
                if (parsed.scheme, parsed.host, parsed.port) != (base.scheme, base.host, base.port):
                    raise TargetError(
                        f"target {self.name}: a search page links to another server; not followed"
                    )
                return url
        return None

    # -- HTTP with retries and the token --------------------------------------------------------

    def _call(
        self,
        what: str,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request, retried on transient failures only; other answers are returned."""
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(TransientTargetError),
            before_sleep=self._log_retry,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            response: httpx.Response = retrying(
                self._attempt, what, method, url, content=content, params=params
            )
        except TransientTargetError as exc:
            raise TransientTargetError(
                f"{exc} (gave up after {self.max_attempts} attempts)"
            ) from None
        return response

    def _attempt(
        self,
        what: str,
        method: str,
        url: str,
        *,
        content: bytes | None,
        params: Mapping[str, str] | None,
    ) -> httpx.Response:
        where = f"target {self.name}: {what}"
        headers = {"Content-Type": FHIR_JSON} if content is not None else {}
        for refreshed in (False, True):
            token = self.auth.token(self._client) if self.auth is not None else None
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = self._client.request(
                    method, url, content=content, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                # The class names the problem; its text may quote the URL.
                raise _Retry(f"{where}: {type(exc).__name__}") from None
            status = response.status_code
            if status == 401 and token is not None and self.auth is not None and not refreshed:
                self.auth.invalidate(token)  # expired or revoked early: one fresh token
                continue
            if status == 401:
                raise TargetError(
                    f"{where}: HTTP 401, the server refused "
                    + (
                        "the fresh bearer token" if token is not None else "an unauthenticated call"
                    ),
                    reason="target_auth_failed",
                )
            if status in _RETRY_STATUSES:
                raise _Retry(
                    f"{where}: HTTP {status}",
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retry) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_retry_after)
        return float(self._backoff(state))

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "%s; attempt %d of %d, retrying in %.2fs",
            exc,
            state.attempt_number,
            self.max_attempts,
            wait,
        )


def open_fhir_target(loaded: LoadedFeed, config: FhirTargetConfig) -> FhirTarget:
    """Build the FHIR target a feed's config describes (its schema must support FHIR)."""
    schema = get_schema(loaded.config.schema_name)
    if not isinstance(schema, SupportsFhir):
        raise ConfigError(
            f"target {config.name}: schema {loaded.config.schema_name!r} cannot express "
            "its rows as FHIR resources (no fhir_resources)"
        )
    auth_fields = (config.token_url, config.client_id, config.client_secret)
    auth: ClientCredentials | None = None
    if any(value is not None for value in auth_fields):
        if config.token_url is None or config.client_id is None or config.client_secret is None:
            raise ConfigError(
                f"target {config.name}: token_url, client_id and client_secret go together"
            )
        auth = ClientCredentials(
            config.token_url,
            config.client_id,
            # A file written by `echo` ends in a newline that is no part of the secret.
            SecretStr(
                resolve_secret(config.client_secret, base_dir=loaded.base_dir)
                .get_secret_value()
                .rstrip("\r\n")
            ),
            target=config.name,
            scope=config.scope,
        )
    identity = FhirIdentity(
        identifier_system=config.identifier_system,
        patient_identifier_system=config.patient_identifier_system,
    )
    # Dry run on no rows: a schema that needs a column the target does not receive
    # fails now, not at night.
    columns = dict.fromkeys([*schema.natural_key, *config.columns, ROW_COLUMN])
    list(schema.fhir_resources(pl.DataFrame(schema=dict.fromkeys(columns, pl.String)), identity))
    return FhirTarget(
        name=config.name,
        base_url=config.base_url,
        schema=schema,
        identity=identity,
        columns=config.columns,
        auth=auth,
        bundle_size=config.bundle_size,
        max_attempts=config.max_attempts,
        max_retry_after=config.max_retry_after_seconds,
        timeout_seconds=config.timeout_seconds,
    )
