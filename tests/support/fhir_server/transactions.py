"""FHIR semantics of the test server: validation, atomic transactions, identifier search.

- A `transaction` Bundle is atomic; its `GET` entries (searches) are answered after
  its writes. Every entry is validated first, any invalid one
  answers 400/422 with an OperationOutcome and nothing is stored. `POST` entries with
  `ifNoneExist` are conditional creates (0 matches: 201, 1: 200 and nothing new, more:
  412); `PUT Type?identifier=s|v` is a conditional update (0: create 201, 1: update 200,
  more: 412). An update whose content is unchanged keeps its version and says so the
  way HAPI does (storage response code `SUCCESSFUL_UPDATE_NO_CHANGE`). Conditional
  references (`Patient?identifier=…`) and `urn:uuid:` references are resolved.
- `PUT Type/<id>` outside a transaction (`update_by_id`) updates one resource, on the
  version `If-Match` names (412 when it is no longer the current one).
- `meta.tag` is kept, and tags sent later are added (as HAPI does); a search may filter
  by `_tag=system|code`.
- Validation a lenient pipeline may pass: an Observation without status, code or
  subject (422 `required`), a status outside the value set (422 `value`), a LOINC code
  in the reject codes (422 `code-invalid`). Like real servers, diagnostics quote the
  offending content: clients must never keep them.
"""

from __future__ import annotations

import copy
import json
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tests.support.fhir_server.store import (
    FhirFailure,
    ServerState,
    Store,
    merged_tags,
    parse_match_url,
    parse_tokens,
    resource_content,
    resource_identifiers,
    resource_tags,
)

FHIR_BASE = "/fhir"
LOINC = "http://loinc.org"
STORAGE_RESPONSE_SYSTEM = "https://hapifhir.io/fhir/CodeSystem/hapi-fhir-storage-response-code"
OBSERVATION_STATUSES = frozenset(
    {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
SUPPORTED_TYPES = ("Observation", "Patient")
SEARCH_PARAMS = frozenset(
    {"identifier", "_tag", "_count", "_offset", "_summary", "_elements", "_total"}
)


def _references(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def validate_resource(resource: Any, reject_codes: set[str], where: str) -> None:
    """Raise FhirFailure for content this server refuses; diagnostics quote it, as servers do."""
    if not isinstance(resource, dict):
        raise FhirFailure(400, "structure", f"{where}: resource is not an object")
    kind = resource.get("resourceType")
    if kind not in SUPPORTED_TYPES:
        raise FhirFailure(400, "not-supported", f"{where}: resource type {kind!r} not supported")
    for identifier in resource.get("identifier") or []:
        if not isinstance(identifier, dict) or not identifier.get("value"):
            raise FhirFailure(422, "required", f"{where}: identifier without value {identifier}")
    if not resource.get("identifier"):
        raise FhirFailure(422, "required", f"{where}: {kind} needs an identifier")
    if kind != "Observation":
        return
    status = resource.get("status")
    if status is None:
        raise FhirFailure(422, "required", f"{where}: Observation.status is required")
    if status not in OBSERVATION_STATUSES:
        raise FhirFailure(422, "value", f"{where}: unknown Observation.status {status!r}")
    code = resource.get("code")
    if not isinstance(code, dict) or not (code.get("coding") or code.get("text")):
        raise FhirFailure(422, "required", f"{where}: Observation.code is required")
    for coding in code.get("coding") or []:
        if coding.get("system") == LOINC and coding.get("code") in reject_codes:
            raise FhirFailure(
                422,
                "code-invalid",
                f"{where}: LOINC code {coding.get('code')} is not valid in {json.dumps(resource)}",
            )
    if not isinstance(resource.get("subject"), dict):
        raise FhirFailure(422, "required", f"{where}: Observation.subject is required")
    if "valueQuantity" in resource and "valueString" in resource:
        raise FhirFailure(422, "invariant", f"{where}: obs-value: one value[x] only")


def _entry_request(entry: Any, position: int) -> tuple[str, str, dict[str, Any]]:
    where = f"Bundle.entry[{position}]"
    if not isinstance(entry, dict):
        raise FhirFailure(400, "structure", f"{where} is not an object")
    request = entry.get("request")
    if not isinstance(request, dict):
        raise FhirFailure(400, "required", f"{where}.request is required")
    method, url = request.get("method"), request.get("url")
    if method == "GET" and isinstance(url, str) and url:
        return method, url, {}  # a search, answered after the writes
    if method not in ("POST", "PUT") or not isinstance(url, str) or not url:
        raise FhirFailure(400, "not-supported", f"{where}: method {method!r} not supported")
    resource = entry.get("resource")
    if not isinstance(resource, dict):
        raise FhirFailure(400, "required", f"{where}.resource is required")
    url_type = url.partition("?")[0].partition("/")[0]
    if url_type != resource.get("resourceType"):
        raise FhirFailure(400, "invalid", f"{where}: URL type {url_type!r} differs from resource")
    return method, url, resource


def _stored_response(status: str, stored: Mapping[str, Any], code: str) -> dict[str, Any]:
    version = stored["meta"]["versionId"]
    return {
        "response": {
            "status": status,
            "location": f"{stored['resourceType']}/{stored['id']}/_history/{version}",
            "etag": f'W/"{version}"',
            "lastModified": stored["meta"]["lastUpdated"],
            "outcome": {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "information",
                        "code": "informational",
                        "details": {"coding": [{"system": STORAGE_RESPONSE_SYSTEM, "code": code}]},
                    }
                ],
            },
        }
    }


def _one(store: Store, url: str, where: str) -> str | None:
    resource_type, system, value = parse_match_url(url)
    matches = store.find(resource_type, system, value)
    if len(matches) > 1:
        raise FhirFailure(412, "multiple-matches", f"{where}: {len(matches)} matches for {url}")
    return matches[0] if matches else None


def run_transaction(state: ServerState, bundle: Any) -> dict[str, Any]:
    """Apply a transaction Bundle atomically; the transaction-response, or FhirFailure."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirFailure(400, "structure", "the body is not a Bundle")
    if bundle.get("type") != "transaction":
        raise FhirFailure(400, "not-supported", f"Bundle.type {bundle.get('type')!r}")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise FhirFailure(400, "structure", "Bundle.entry is not a list")
    requests = [_entry_request(entry, i) for i, entry in enumerate(entries)]
    for position, (method, _url, resource) in enumerate(requests):
        if method != "GET":
            validate_resource(resource, state.reject_codes, f"Bundle.entry[{position}]")

    store = state.store.clone()
    answers: list[dict[str, Any] | None] = [None] * len(entries)
    full_urls: dict[str, str] = {}
    # Spec order: creates (POST) before updates (PUT).
    order = [i for i, r in enumerate(requests) if r[0] == "POST"]
    order += [i for i, r in enumerate(requests) if r[0] == "PUT"]
    for position in order:
        method, url, resource = requests[position]
        where = f"Bundle.entry[{position}]"
        resource = copy.deepcopy(resource)
        resource_type = resource["resourceType"]
        for reference in _references(resource):
            target = reference["reference"]
            if target in full_urls:
                reference["reference"] = full_urls[target]
            elif "?" in target:
                found = _one(store, target, where)
                if found is None:
                    raise FhirFailure(400, "not-found", f"{where}: no match for {target}")
                reference["reference"] = f"{target.partition('?')[0]}/{found}"
        full_url = entries[position].get("fullUrl")
        if method == "POST":
            if_none_exist = entries[position]["request"].get("ifNoneExist")
            existing = (
                _one(store, f"{resource_type}?{if_none_exist}", where) if if_none_exist else None
            )
            if existing is not None:
                stored = store.resources[resource_type][existing]
                answer = _stored_response(
                    "200 OK", stored, "SUCCESSFUL_CREATE_WITH_CONDITIONAL_MATCH"
                )
            else:
                stored = store.put(resource_type, store.new_id(), resource)
                answer = _stored_response("201 Created", stored, "SUCCESSFUL_CREATE")
        else:
            if "?" in url:
                _t, system, value = parse_match_url(url)
                if (system, value) not in [(s, v) for s, v in resource_identifiers(resource)]:
                    raise FhirFailure(400, "invalid", f"{where}: resource lacks {url}")
                rid = _one(store, url, where)
            else:
                rid = url.partition("/")[2] or None
            current = store.resources.get(resource_type, {}).get(rid) if rid else None
            if current is not None and _unchanged(current, resource):
                answer = _stored_response("200 OK", current, "SUCCESSFUL_UPDATE_NO_CHANGE")
                stored = current
            elif current is not None:
                stored = store.put(resource_type, str(rid), resource)
                answer = _stored_response("200 OK", stored, "SUCCESSFUL_UPDATE")
            else:
                stored = store.put(resource_type, rid or store.new_id(), resource)
                answer = _stored_response("201 Created", stored, "SUCCESSFUL_CREATE")
        if isinstance(full_url, str) and full_url:
            full_urls[full_url] = f"{resource_type}/{stored['id']}"
        answers[position] = answer
    previous, state.store = state.store, store
    try:
        for position, (method, url, _resource) in enumerate(requests):
            if method == "GET":
                resource_type, _, query = url.partition("?")
                searchset = search(state, resource_type, query)
                answers[position] = {"resource": searchset, "response": {"status": "200 OK"}}
    except FhirFailure:
        state.store = previous
        raise
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": answers,
    }


def search(state: ServerState, resource_type: str, query: str) -> dict[str, Any]:
    """A searchset Bundle for `identifier` tokens (or everything), paged."""
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - SEARCH_PARAMS)
    if unknown:
        raise FhirFailure(400, "not-supported", f"unknown search parameters {unknown}")
    store = state.store
    if "identifier" in params:
        ids: set[str] = set()
        for value in params["identifier"]:
            for system, token_value in parse_tokens(value):
                ids.update(store.find(resource_type, system, token_value))
    else:
        ids = set(store.resources.get(resource_type, {}))
    for value in params.get("_tag", []):
        wanted = parse_tokens(value)
        ids = {
            rid
            for rid in ids
            if any(
                (system is None or tag["system"] == system) and tag["code"] == code
                for system, code in wanted
                for tag in resource_tags(store.resources[resource_type][rid])
            )
        }
    ordered = sorted(ids, key=lambda rid: (len(rid), rid))
    try:
        count = min(int(params.get("_count", ["50"])[0]), 1000)
        offset = int(params.get("_offset", ["0"])[0])
    except ValueError:
        raise FhirFailure(400, "invalid", "_count and _offset must be integers") from None
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(ordered),
        "link": [{"relation": "self", "url": f"{FHIR_BASE}/{resource_type}?{query}"}],
    }
    if params.get("_summary", [""])[0] == "count":
        return bundle
    elements = params.get("_elements", [""])[0]
    page = ordered[offset : offset + count]
    resources = store.resources.get(resource_type, {})
    entries = []
    for rid in page:
        resource = resources[rid]
        if elements:
            keep = {"resourceType", "id", "meta", *elements.split(",")}
            resource = {k: v for k, v in resource.items() if k in keep}
        entries.append(
            {
                "fullUrl": f"{resource_type}/{rid}",
                "resource": resource,
                "search": {"mode": "match"},
            }
        )
    bundle["entry"] = entries
    if offset + count < len(ordered):
        rest = {k: v for k, v in params.items() if k != "_offset"}
        rest["_offset"] = [str(offset + count)]
        bundle["link"].append(
            {"relation": "next", "url": f"{FHIR_BASE}/{resource_type}?{_encode(rest)}"}
        )
    return bundle


def _unchanged(current: Mapping[str, Any], resource: Mapping[str, Any]) -> bool:
    """An update that would store what is there already (content and tags)."""
    return resource_content(current) == resource_content(resource) and merged_tags(
        current, resource
    ) == resource_tags(current)


def read_resource(state: ServerState, resource_type: str, rid: str) -> dict[str, Any]:
    """`GET Type/<id>`: the current resource, or FhirFailure 404."""
    if resource_type not in SUPPORTED_TYPES:
        raise FhirFailure(404, "not-supported", f"{resource_type} is not supported")
    resource = state.store.resources.get(resource_type, {}).get(rid)
    if resource is None:
        raise FhirFailure(404, "not-found", f"{resource_type}/{rid} is not known")
    return resource


def update_by_id(
    state: ServerState, resource_type: str, rid: str, resource: Any, if_match: str | None
) -> tuple[int, dict[str, Any]]:
    """`PUT Type/<id>` with an optional `If-Match: W/"<version>"`: (status, stored resource).

    200 for an update (or no change), 201 for a create; 412 when If-Match names another
    version than the current one; 400 when the body's id differs from the URL's.
    """
    if resource_type not in SUPPORTED_TYPES:
        raise FhirFailure(404, "not-supported", f"{resource_type} is not supported")
    validate_resource(resource, state.reject_codes, f"{resource_type}/{rid}")
    if resource.get("resourceType") != resource_type or resource.get("id") != rid:
        raise FhirFailure(400, "invalid", f"the body is not {resource_type}/{rid}")
    current = state.store.resources.get(resource_type, {}).get(rid)
    if if_match is not None:
        wanted = if_match.removeprefix("W/").strip('"')
        if current is None or current["meta"]["versionId"] != wanted:
            raise FhirFailure(412, "conflict", f"{resource_type}/{rid} is not at version {wanted}")
    if current is not None and _unchanged(current, resource):
        return 200, current
    stored = state.store.put(resource_type, rid, resource)
    state.save()
    return (200 if current is not None else 201), stored


def _encode(params: Mapping[str, Sequence[str]]) -> str:
    return urllib.parse.urlencode([(k, v) for k, vs in params.items() for v in vs])


CAPABILITY_STATEMENT: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "kind": "instance",
    "fhirVersion": "4.0.1",
    "format": ["json"],
    "software": {"name": "batchbridge test FHIR server"},
    "rest": [
        {
            "mode": "server",
            "security": {"service": [{"text": "OAuth2 client credentials"}]},
            "resource": [
                {
                    "type": resource_type,
                    "interaction": [{"code": "read"}, {"code": "search-type"}],
                    "conditionalCreate": True,
                    "conditionalUpdate": True,
                    "searchParam": [{"name": "identifier", "type": "token"}],
                }
                for resource_type in SUPPORTED_TYPES
            ],
            "interaction": [{"code": "transaction"}],
        }
    ],
}
