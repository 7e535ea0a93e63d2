"""Full snapshots on a FHIR server: the tenant's resources a full file lacks get `active: false`.

The scope (what "the tenant's records" means on a shared server):
- Every resource the target writes carries the tenant tag, `meta.tag` {TENANT_TAG_SYSTEM,
  <tenant>} (`with_tenant_tag`), as every SQL row carries its tenant column.
- A snapshot covers the resources of the load's one type that carry an identifier under
  the target's `identifier_system` *and* the tenant's tag. The tag is what keeps another
  tenant's resources out even if two feeds were configured with one identifier system;
  the shared pseudonymous-key system is never searched. A resource whose tags name
  another tenant as well is left alone (logged).

How (`inactivate_absent`):
1. Page through `GET <Type>?identifier=<system>|&_tag=<tag system>|<tenant>&_elements=
   identifier,active&_count=N`, following `next` links on the same server only, and keep
   only ids, identifier values and `active` (nothing else is read from the pages). All
   pages are read before anything changes, so an update cannot shift a page.
2. Check that every resource this load just wrote is in the scope: if not, the server
   drops meta.tag or pages incompletely, and nobody is marked inactive (TargetError).
3. Absent: in scope, `active` true or missing, none of its identifiers under our system
   in the file (loaded, refused by the server, or quarantined: `kept_keys`).
4. Each absent resource is read whole (`GET <Type>/<id>`), checked again (tag, still
   absent, still active, not a SUBSETTED copy), given `active: false` and written back
   with `PUT <Type>/<id>` and `If-Match: W/"<versionId>"`, so whatever else the server
   holds is kept; a 409/412 (changed meanwhile) reads it again, up to 3 times. Nothing is
   deleted. Members back in a later file are made active again by its upserts.

The file's identifiers come from the natural key: the snapshot needs resources whose
identifier is the value of the feed's one-column natural key (the roster's member_id),
so quarantined keys can be matched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
import polars as pl

from batchbridge.connectors.targets.base import LoadRequest
from batchbridge.connectors.targets.fhir.wire import (
    HttpCall,
    issue_code,
    json_or_none,
    next_link,
    search_token,
)
from batchbridge.errors import TargetError
from batchbridge.validations.base import ROW_COLUMN, FhirResource

logger = logging.getLogger(__name__)

TENANT_TAG_SYSTEM = "urn:batchbridge:tenant"
"""System of the `meta.tag` naming the tenant whose feed wrote a resource."""
SNAPSHOT_PAGE = 500
"""`_count` asked of each snapshot search page (servers may cap it lower and page on)."""
ACTIVE_TYPES = frozenset(
    {
        "Group",
        "HealthcareService",
        "Organization",
        "Patient",
        "Person",
        "Practitioner",
        "PractitionerRole",
        "RelatedPerson",
    }
)
"""FHIR R4 resource types with a boolean `active` element: the only ones a snapshot marks."""

_SUBSETTED = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")
_CONFLICTS = 3
_MAX_PAGES = 100_000


def with_tenant_tag(item: FhirResource, tenant: str) -> FhirResource:
    """`item` whose resource carries the tenant tag (any other tag under our system dropped)."""
    resource = item.resource
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if _tag_system(t) != TENANT_TAG_SYSTEM]
    meta["tag"] = [*tags, {"system": TENANT_TAG_SYSTEM, "code": tenant}]
    return replace(item, resource={**resource, "meta": meta})


def _tag_system(tag: object) -> object:
    return tag.get("system") if isinstance(tag, dict) else None


@dataclass(frozen=True)
class SnapshotPlan:
    """What one full-snapshot load covers, and the identifiers its file holds."""

    resource_type: str
    system: str
    tenant: str
    current: frozenset[str]
    """Identifiers of every row of the file (loaded, refused or quarantined)."""
    by_row: Mapping[int, str]
    """Identifier of each row sent."""


def plan_snapshot(
    target: str,
    request: LoadRequest,
    *,
    keys: Sequence[str],
    frame: pl.DataFrame,
    resources: Sequence[FhirResource],
    shared_system: str,
) -> SnapshotPlan | None:
    """The scope of a full-snapshot load of `frame` as `resources` (None: no rows, no scope).

    Called before anything is sent. TargetError when the load cannot be a FHIR snapshot:
    a resource type without `active`, several types or systems, the `shared_system`
    (patient keys), or identifiers that are not the natural key (quarantined keys could
    not be matched).
    """
    if not resources:
        # The resource type comes from the rows: with none, the scope is unknown.
        logger.warning("target %s: a full snapshot without rows marks nobody inactive", target)
        return None
    types = {str(r.resource.get("resourceType")) for r in resources}
    systems = {r.identifier_system for r in resources}
    if len(types) != 1 or len(systems) != 1:
        raise TargetError(f"target {target}: a full snapshot needs one resource type and system")
    (resource_type,), (system,) = types, systems
    if system == shared_system:
        raise TargetError(
            f"target {target}: a full snapshot needs an identifier_system of its own, not the "
            "pseudonymous patient-key system other feeds and tenants write under too"
        )
    if resource_type not in ACTIVE_TYPES:
        raise TargetError(
            f"target {target}: {resource_type} has no `active` element; a full snapshot "
            f"marks only {', '.join(sorted(ACTIVE_TYPES))} inactive"
        )
    if len(keys) != 1:
        raise TargetError(f"target {target}: a full snapshot to FHIR needs a one-column key")
    key_of_row = dict(
        zip(
            frame.get_column(ROW_COLUMN).to_list(),
            frame.get_column(keys[0]).cast(pl.String).to_list(),
            strict=True,
        )
    )
    if any(r.row is None or key_of_row.get(r.row) != r.identifier for r in resources):
        raise TargetError(
            f"target {target}: a full snapshot needs each resource identified by its "
            f"{keys[0]}; this schema's identifiers differ, so nobody can be marked inactive"
        )
    by_row = {int(r.row or 0): r.identifier for r in resources}
    current = set(by_row.values())
    kept_keys = request.kept_keys
    if kept_keys is not None and kept_keys.height:
        kept = kept_keys.get_column(keys[0]).cast(pl.String).str.strip_chars().drop_nulls()
        current.update(kept.to_list())
    return SnapshotPlan(resource_type, system, request.tenant, frozenset(current), by_row)


@dataclass(frozen=True)
class _Found:
    values: frozenset[str]
    active: bool | None


def inactivate_absent(
    plan: SnapshotPlan,
    *,
    refused_rows: Iterable[int],
    call: HttpCall,
    base_url: str,
    target: str,
) -> int:
    """Mark the scope's active resources absent from the file inactive; how many were.

    Runs after the rows are upserted; `refused_rows` are the rows the server refused.
    """
    refused = set(refused_rows)
    written = {value for row, value in plan.by_row.items() if row not in refused}
    found = _scope(plan, call=call, base_url=base_url, target=target, page=SNAPSHOT_PAGE)
    seen: set[str] = set()
    for item in found.values():
        seen.update(item.values)
    missing = written - seen
    if missing:
        raise TargetError(
            f"target {target}: the snapshot search by identifier system and tenant tag found "
            f"{len(written) - len(missing)} of the {len(written)} "
            f"{plan.resource_type} resources this load wrote (does the server keep meta.tag "
            "and page completely?); nobody was marked inactive"
        )
    absent = sorted(
        rid
        for rid, item in found.items()
        if item.active is not False and not item.values & plan.current
    )
    done = sum(
        _inactivate(plan, rid, call=call, base_url=base_url, target=target) for rid in absent
    )
    logger.info(
        "target %s: full snapshot: %d of %d %s resources of the tenant marked inactive",
        target,
        done,
        len(found),
        plan.resource_type,
    )
    return done


def _scope(
    plan: SnapshotPlan, *, call: HttpCall, base_url: str, target: str, page: int
) -> dict[str, _Found]:
    """id -> identifier values and `active` of every resource in the snapshot's scope."""
    url = f"{base_url}/{plan.resource_type}"
    params: Mapping[str, str] | None = {
        "identifier": search_token(plan.system, ""),
        "_tag": search_token(TENANT_TAG_SYSTEM, plan.tenant),
        "_elements": "identifier,active",
        "_count": str(page),
    }
    found: dict[str, _Found] = {}
    visited: set[str] = set()
    for number in range(1, _MAX_PAGES + 1):
        what = f"snapshot search of {plan.resource_type}, page {number}"
        response = call(what, "GET", url, params=params)
        body = json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise TargetError(
                f"target {target}: {what}: HTTP {response.status_code} ({issue_code(response)})"
            )
        for resource in _matches(body, plan.resource_type):
            values = frozenset(
                str(i.get("value"))
                for i in resource.get("identifier") or []
                if isinstance(i, dict) and i.get("system") == plan.system and i.get("value")
            )
            active = resource.get("active")
            found[str(resource["id"])] = _Found(
                values, active if isinstance(active, bool) else None
            )
        next_url = next_link(body, base_url, target)
        if next_url is None:
            return found
        if next_url in visited:
            raise TargetError(f"target {target}: {what} links back to an earlier page")
        visited.add(next_url)
        # The next link carries the query: params (even empty ones) would replace it.
        url, params = next_url, None
    raise TargetError(f"target {target}: the snapshot search paged past {_MAX_PAGES} pages")


def _matches(bundle: Mapping[str, Any], resource_type: str) -> Iterable[dict[str, Any]]:
    for entry in bundle.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode", "match") != "match":
            continue  # _include'd resources and OperationOutcomes are not matches
        resource = entry.get("resource")
        if (
            isinstance(resource, dict)
            and resource.get("resourceType") == resource_type
            and isinstance(resource.get("id"), str)
            and resource["id"]
        ):
            yield resource


def _inactivate(
    plan: SnapshotPlan, rid: str, *, call: HttpCall, base_url: str, target: str
) -> bool:
    """Read `rid` whole, set `active: false`, write it back on its version; False if skipped."""
    url = f"{base_url}/{plan.resource_type}/{rid}"
    name = f"{plan.resource_type}/{rid}"
    for _attempt in range(_CONFLICTS):
        read = call(f"read {name}", "GET", url)
        if read.status_code in (404, 410):
            return False  # gone meanwhile: nothing to mark
        resource = json_or_none(read)
        if read.status_code != 200 or not isinstance(resource, dict):
            raise TargetError(
                f"target {target}: read {name}: HTTP {read.status_code} ({issue_code(read)})"
            )
        skip = _why_not(plan, resource, rid, target)
        if skip is not None:
            logger.info("target %s: %s not marked inactive: %s", target, name, skip)
            return False
        version = _version(read, resource)
        # Everything as the server has it, but `active`; the version goes in If-Match.
        body = {k: v for k, v in resource.items() if k != "meta"}
        meta = {
            k: v
            for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")
        }
        if meta:
            body["meta"] = meta
        body["active"] = False
        headers = {"If-Match": f'W/"{version}"'} if version else {}
        content = json.dumps(body, separators=(",", ":")).encode()
        written = call(f"inactivate {name}", "PUT", url, content=content, headers=headers)
        if written.status_code == 200:
            return True
        if written.status_code not in (409, 412):
            raise TargetError(
                f"target {target}: inactivate {name}: HTTP {written.status_code} "
                f"({issue_code(written)})"
            )
        logger.info(
            "target %s: %s changed while being marked inactive; reading again", target, name
        )
    raise TargetError(
        f"target {target}: {name} changed {_CONFLICTS} times while being marked inactive"
    )


def _why_not(plan: SnapshotPlan, resource: Mapping[str, Any], rid: str, target: str) -> str | None:
    """Why the resource read as `rid` must not be marked inactive (None: go ahead)."""
    name = f"{plan.resource_type}/{rid}"
    if resource.get("resourceType") != plan.resource_type or resource.get("id") != rid:
        raise TargetError(f"target {target}: read {name}: the answer is another resource")
    tags = [t for t in (resource.get("meta") or {}).get("tag") or [] if isinstance(t, dict)]
    if any((t.get("system"), t.get("code")) == _SUBSETTED for t in tags):
        raise TargetError(
            f"target {target}: read {name}: the server answered a SUBSETTED copy; writing it "
            "back would lose data, so nobody is marked inactive"
        )
    tenants = {t.get("code") for t in tags if t.get("system") == TENANT_TAG_SYSTEM}
    if plan.tenant not in tenants:
        return "it no longer carries the tenant's tag"
    if len(tenants) > 1:
        return "its tags name another tenant as well"
    if resource.get("active") is False:
        return "already inactive"
    values = {
        str(i.get("value"))
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") == plan.system
    }
    if values & plan.current:
        return "it is in the file"
    return None


def _version(response: httpx.Response, resource: Mapping[str, Any]) -> str | None:
    """The version the read answered: its ETag (W/"3"), else meta.versionId."""
    etag = str(response.headers.get("ETag", "")).removeprefix("W/")
    if len(etag) > 2 and etag.startswith('"') and etag.endswith('"'):
        return etag[1:-1]
    version = (resource.get("meta") or {}).get("versionId")
    return str(version) if isinstance(version, str | int) and str(version) else None
