"""Transaction Bundles of a FHIR load: building them, reading their answers, and bisecting
a refused one down to the rows the server refuses."""

from __future__ import annotations

import logging
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchbridge.connectors.targets.base import RowRejection
from batchbridge.connectors.targets.fhir.wire import match_url
from batchbridge.errors import TargetError
from batchbridge.validations.base import FhirResource

logger = logging.getLogger(__name__)

STORAGE_RESPONSE_SYSTEM = "https://hapifhir.io/fhir/CodeSystem/hapi-fhir-storage-response-code"
NO_CHANGE_CODES = frozenset({"SUCCESSFUL_UPDATE_NO_CHANGE"})
"""Codes (under STORAGE_RESPONSE_SYSTEM) by which a server says an update changed nothing."""

Outcome = str
"""What one row's entry did: 'inserted', 'updated' or 'unchanged'."""


class Refused(Exception):
    """A transaction refused for its content (a row's fault): bisect."""

    def __init__(self, status: int, issue: str) -> None:
        super().__init__(f"http_{status}:{issue}")
        self.reason = f"http_{status}:{issue}"


@dataclass(frozen=True)
class RowUnit:
    """One row's resource and the supporting resources (match URLs) it refers to."""

    row: int
    resource: FhirResource
    needs: tuple[str, ...]


@dataclass(frozen=True)
class BundlePlan:
    """A load's row units, the supporting resources by match URL, and those no row names."""

    units: list[RowUnit]
    supporting: dict[str, FhirResource]
    orphans: tuple[str, ...]


@dataclass
class Tally:
    """What the Bundles of one load did, row by row."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejections: list[RowRejection] = field(default_factory=list)

    def add(self, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            if outcome == "inserted":
                self.inserted += 1
            elif outcome == "unchanged":
                self.unchanged += 1
            else:
                self.updated += 1


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


def conditional_target(reference: str) -> tuple[str, str, str] | None:
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


def plan_bundles(target: str, resources: Iterable[FhirResource], rows: list[int]) -> BundlePlan:
    """Sort a schema's resources into one unit per row (`rows`) and supporting resources."""
    supporting: dict[str, FhirResource] = {}
    by_target: dict[tuple[str, str, str], str] = {}
    row_resources: list[FhirResource] = []
    for item in resources:
        if item.row is None:
            resource_type = str(item.resource.get("resourceType"))
            url = match_url(resource_type, item.identifier_system, item.identifier)
            supporting[url] = item
            by_target[(resource_type, item.identifier_system, item.identifier)] = url
        else:
            row_resources.append(item)
    if sorted(r.row for r in row_resources if r.row is not None) != sorted(rows):
        raise TargetError(
            f"target {target}: the schema made {len(row_resources)} resources "
            f"for {len(rows)} rows (one per row expected)"
        )
    identifiers = {
        (str(r.resource.get("resourceType")), r.identifier_system, r.identifier)
        for r in row_resources
    }
    if len(identifiers) != len(row_resources):
        raise TargetError(f"target {target}: rows of one load share a FHIR identifier")
    units: list[RowUnit] = []
    referenced: set[str] = set()
    for item in row_resources:
        needs: list[str] = []
        for reference in _references(item.resource):
            found = conditional_target(reference)
            match = by_target.get(found) if found is not None else None
            if match is not None and match not in needs:
                needs.append(match)
        referenced.update(needs)
        units.append(RowUnit(row=int(item.row or 0), resource=item, needs=tuple(needs)))
    orphans = tuple(url for url in supporting if url not in referenced)
    return BundlePlan(units=units, supporting=supporting, orphans=orphans)


def _pointing_at(node: Any, full_urls: Mapping[tuple[str, str, str], str]) -> Any:
    """A copy of `node` whose conditional references to Bundle entries name their fullUrl."""
    if isinstance(node, Mapping):
        copied = {key: _pointing_at(value, full_urls) for key, value in node.items()}
        reference = node.get("reference")
        found = conditional_target(reference) if isinstance(reference, str) else None
        if found is not None and found in full_urls:
            copied["reference"] = full_urls[found]
        return copied
    if isinstance(node, list):
        return [_pointing_at(item, full_urls) for item in node]
    return node


def transaction_entries(
    plan: BundlePlan, units: Sequence[RowUnit], orphans: Sequence[str]
) -> tuple[list[dict[str, Any]], int]:
    """Conditional creates of the supporting resources `units` need, then their updates.

    A row's conditional reference to a supporting resource (`Patient?identifier=s|v`)
    is sent as a reference to that create's `fullUrl` (`urn:uuid:`), which every server
    resolves to the resource created or matched; conditional references inside resources
    are optional in FHIR R4, and Medplum stores them unresolved. Returns the entries and
    how many creates come first (their answers are not rows).
    """
    creates = list(dict.fromkeys([url for unit in units for url in unit.needs]))
    creates += [url for url in orphans if url not in creates]
    entries: list[dict[str, Any]] = []
    full_urls: dict[tuple[str, str, str], str] = {}
    for url in creates:
        item = plan.supporting[url]
        resource_type, _, query = url.partition("?")
        full_url = f"urn:uuid:{uuid.uuid4()}"
        full_urls[(resource_type, item.identifier_system, item.identifier)] = full_url
        entries.append(
            {
                "fullUrl": full_url,
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
                "resource": _pointing_at(item.resource, full_urls),
                "request": {
                    "method": "PUT",
                    "url": match_url(resource_type, item.identifier_system, item.identifier),
                },
            }
        )
    return entries, len(creates)


def _status_of(entry: object) -> int | None:
    response = entry.get("response") if isinstance(entry, dict) else None
    status = response.get("status") if isinstance(response, dict) else None
    found = re.match(r"^\s*(\d{3})\b", status) if isinstance(status, str) else None
    return int(found.group(1)) if found else None


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


def read_outcomes(answer: Any, sent: int, offset: int, where: str) -> list[Outcome]:
    """The outcome of each row entry of a transaction-response to `sent` entries.

    Entries before `offset` are the supporting creates. `where` names the target and
    Bundle in errors; a 201 is an insert, a 200 an update or, if the server says so, a
    no-op.
    """
    answered = answer.get("entry", []) if isinstance(answer, dict) else None
    if (
        not isinstance(answer, dict)
        or answer.get("type") != "transaction-response"
        or not isinstance(answered, list)
        or len(answered) != sent
    ):
        raise TargetError(f"{where}: the answer is not a transaction-response with {sent} entries")
    outcomes: list[Outcome] = []
    for position, entry in enumerate(answered[offset:], start=offset):
        code = _status_of(entry)
        if code == 201:
            outcomes.append("inserted")
        elif code == 200:
            outcomes.append("unchanged" if _reports_no_change(entry) else "updated")
        else:
            raise TargetError(f"{where}: entry {position} answered {code} (expected 200 or 201)")
    return outcomes


def send_bisecting(
    units: Sequence[RowUnit],
    send: Callable[[Sequence[RowUnit]], list[Outcome]],
    tally: Tally,
    *,
    target: str,
    bundle: int,
) -> None:
    """Send `units` in one transaction; bisect a refused one down to the refused rows.

    A transaction is atomic, so one invalid row fails its Bundle: halves are sent
    again until each refused row stands alone and becomes a RowRejection.
    """
    try:
        outcomes = send(units)
    except Refused as refused:
        if len(units) == 1:
            tally.rejections.append(RowRejection(row=units[0].row, reason=refused.reason))
            return
        middle = len(units) // 2
        logger.info(
            "target %s: bundle %d (%d rows) refused (%s); bisecting",
            target,
            bundle,
            len(units),
            refused.reason,
        )
        send_bisecting(units[:middle], send, tally, target=target, bundle=bundle)
        send_bisecting(units[middle:], send, tally, target=target, bundle=bundle)
        return
    tally.add(outcomes)
