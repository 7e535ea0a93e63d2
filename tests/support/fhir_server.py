"""A small FHIR R4 server for tests: transactions, conditional create/update, OAuth2, faults.

No maintained FHIR server installs from the package registries this project uses, so
the FHIR target is tested against this one, run as a separate process:

    python -m tests.support.fhir_server --port 0 --client-id X --client-secret Y

It prints `READY <port>` once listening (port 0 picks a free one) and serves on loopback:
- `POST /token`: OAuth2 client credentials (client auth by HTTP Basic or form fields);
  bearer tokens expire after `--token-ttl` seconds. FHIR routes answer 401 without one.
- `GET /fhir/metadata`: a CapabilityStatement (no token needed).
- `POST /fhir`: a `transaction` Bundle, atomic. Every entry is validated first, any
  invalid one answers 400/422 with an OperationOutcome and nothing is stored.
  `POST` entries with `ifNoneExist` are conditional creates (0 matches: 201, 1: 200
  and nothing new, more: 412); `PUT Type?identifier=s|v` is a conditional update
  (0: create 201, 1: update 200, more: 412). An update whose content is unchanged
  keeps its version and says so the way HAPI does (storage response code
  `SUCCESSFUL_UPDATE_NO_CHANGE`). Conditional references (`Patient?identifier=…`) and
  `urn:uuid:` references are resolved.
- `GET /fhir/<Type>?identifier=s|v1,s|v2` with `_count`, `_offset`, `_summary=count`,
  `_elements`; `GET /fhir/<Type>/<id>`.
- Validation a lenient pipeline may pass: an Observation without status, code or
  subject (422 `required`), a status outside the value set (422 `value`), a LOINC code
  in `--reject-codes` (422 `code-invalid`). Like real servers, diagnostics quote the
  offending content: clients must never keep them.
- `/_admin/...` (tests only): `POST faults` {"status", "retry_after", "times", "route",
  "drop"}, `POST expire-tokens`, `POST config` {"reject_codes"}, `POST reset`,
  `GET stats`, `GET resources/<Type>`.

`--state-file` keeps the store across restarts (written after every commit).
`start_fhir_server` runs it as a subprocess and returns a handle with admin helpers.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import ipaddress
import json
import os
import re
import secrets
import selectors
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

FHIR_BASE = "/fhir"
FHIR_JSON = "application/fhir+json"
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
SEARCH_PARAMS = frozenset({"identifier", "_count", "_offset", "_summary", "_elements", "_total"})
MAX_BODY = 64 * 1024 * 1024


class FhirFailure(Exception):
    """An answer that aborts the request: HTTP status, IssueType code, diagnostics."""

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    """An OperationOutcome with one issue."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# -- token search values ---------------------------------------------------------------------


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split on `separator` where it is not backslash-escaped; unescape the parts."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
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


def _raw_split(text: str, separator: str) -> list[str]:
    """Split on unescaped `separator`, keeping escapes (for a second split)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_tokens(value: str) -> list[tuple[str | None, str | None]]:
    """`s|v,s2|v2` -> [(s, v), (s2, v2)]; `v` -> (None, v); `s|` -> (s, None); `|v` -> ("", v)."""
    tokens: list[tuple[str | None, str | None]] = []
    for item in _raw_split(value, ","):
        parts = split_unescaped(item, "|")
        if len(parts) == 1:
            tokens.append((None, parts[0]))
        elif len(parts) == 2:
            tokens.append((parts[0], parts[1] or None))
        else:
            raise FhirFailure(400, "invalid", f"malformed token {item!r}")
    return tokens


def parse_match_url(url: str) -> tuple[str, str | None, str | None]:
    """`Type?identifier=s|v` (or `identifier=s|v` with the type given apart) -> parts."""
    resource_type, _, query = url.partition("?")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    if set(params) != {"identifier"} or len(params["identifier"]) != 1:
        raise FhirFailure(400, "invalid", f"unsupported match URL {url!r}")
    tokens = parse_tokens(params["identifier"][0])
    if len(tokens) != 1:
        raise FhirFailure(400, "invalid", f"match URL {url!r} must name one identifier")
    system, value = tokens[0]
    return resource_type, system, value


# -- the store -------------------------------------------------------------------------------


def _identifiers(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    found = []
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("value") is not None:
            found.append((str(identifier.get("system", "")), str(identifier["value"])))
    return found


def _content(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


@dataclass
class Store:
    """Resources by type and id, and an identifier index; copied for atomic transactions."""

    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    index: dict[tuple[str, str, str], tuple[str, ...]] = field(default_factory=dict)
    next_id: int = 1
    versions_written: int = 0

    def clone(self) -> Store:
        return Store(
            resources={t: dict(by_id) for t, by_id in self.resources.items()},
            index=dict(self.index),
            next_id=self.next_id,
            versions_written=self.versions_written,
        )

    def find(self, resource_type: str, system: str | None, value: str | None) -> list[str]:
        if system is not None and value is not None:
            return list(self.index.get((resource_type, system, value), ()))
        return [
            rid
            for rid, resource in self.resources.get(resource_type, {}).items()
            if any(
                (system is None or s == system) and (value is None or v == value)
                for s, v in _identifiers(resource)
            )
        ]

    def put(self, resource_type: str, rid: str, resource: dict[str, Any]) -> dict[str, Any]:
        """Store a new version of `rid` (or its first); returns the stored resource."""
        by_id = self.resources.setdefault(resource_type, {})
        old = by_id.get(rid)
        version = int(old["meta"]["versionId"]) + 1 if old is not None else 1
        stored = {
            "resourceType": resource_type,
            "id": rid,
            "meta": {"versionId": str(version), "lastUpdated": _now()},
            **_content(resource),
        }
        if old is not None:
            for system, value in _identifiers(old):
                key = (resource_type, system, value)
                self.index[key] = tuple(i for i in self.index.get(key, ()) if i != rid)
        for system, value in _identifiers(stored):
            key = (resource_type, system, value)
            if rid not in self.index.get(key, ()):
                self.index[key] = (*self.index.get(key, ()), rid)
        by_id[rid] = stored
        self.versions_written += 1
        return stored

    def new_id(self) -> str:
        rid = str(self.next_id)
        self.next_id += 1
        return rid

    def to_json(self) -> dict[str, Any]:
        return {"resources": self.resources, "next_id": self.next_id}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Store:
        store = cls(next_id=int(data.get("next_id", 1)))
        for resource_type, by_id in dict(data.get("resources", {})).items():
            store.resources[resource_type] = dict(by_id)
            for rid, resource in by_id.items():
                for system, value in _identifiers(resource):
                    key = (resource_type, system, value)
                    store.index[key] = (*store.index.get(key, ()), rid)
        return store


@dataclass
class Fault:
    """A planned failure answer for the next requests on a route."""

    status: int
    retry_after: str | None
    times: int
    route: str
    drop: bool


@dataclass
class ServerState:
    """Everything the handlers share, behind one lock."""

    client_id: str
    client_secret: str
    token_ttl: float
    reject_codes: set[str]
    state_file: Path | None
    store: Store = field(default_factory=Store)
    tokens: dict[str, float] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    initial_reject_codes: frozenset[str] = frozenset()

    def bump(self, name: str, by: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + by

    def save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        tmp.write_text(json.dumps(self.store.to_json()), encoding="utf-8")
        os.replace(tmp, self.state_file)


# -- transactions ----------------------------------------------------------------------------


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
    for position, (_method, _url, resource) in enumerate(requests):
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
                if (system, value) not in [(s, v) for s, v in _identifiers(resource)]:
                    raise FhirFailure(400, "invalid", f"{where}: resource lacks {url}")
                rid = _one(store, url, where)
            else:
                rid = url.partition("/")[2] or None
            current = store.resources.get(resource_type, {}).get(rid) if rid else None
            if current is not None and _content(current) == _content(resource):
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
    state.store = store
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


# -- HTTP -------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """Routes: /token, /fhir…, /_admin/…; see the module docstring."""

    protocol_version = "HTTP/1.1"
    server: FhirHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry identifiers: a test server keeps quiet like a careful one.
        return

    @property
    def state(self) -> ServerState:
        return self.server.state

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        try:
            body = self._body()
            if path.startswith("/_admin/"):
                self._admin(method, path.removeprefix("/_admin/"), body)
                return
            route = "token" if path == "/token" else "fhir"
            if self._fault(route):
                return
            if path == "/token" and method == "POST":
                self._token(body)
            elif path == f"{FHIR_BASE}/metadata" and method == "GET":
                self._send(200, CAPABILITY_STATEMENT)
            elif path == FHIR_BASE or path.startswith(f"{FHIR_BASE}/"):
                self._fhir(method, path.removeprefix(FHIR_BASE).strip("/"), query, body)
            else:
                self._send(404, operation_outcome("not-found", f"no route {path}"))
        except FhirFailure as failure:
            self._send(failure.status, operation_outcome(failure.code, failure.diagnostics))
        except Exception as exc:  # a bug here: answer 500 (never retried) rather than hang up
            self._send(500, operation_outcome("exception", type(exc).__name__))

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise FhirFailure(413, "too-long", "body too large")
        return self.rfile.read(length) if length else b""

    def _fault(self, route: str) -> bool:
        with self.state.lock:
            fault = next(
                (f for f in self.state.faults if f.route in (route, "any") and f.times > 0), None
            )
            if fault is None:
                return False
            fault.times -= 1
            self.state.faults = [f for f in self.state.faults if f.times > 0]
            self.state.bump("faults_served")
        if fault.drop:
            self.close_connection = True
            return True
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        code = "throttled" if fault.status == 429 else "transient"
        self._send(fault.status, operation_outcome(code, "fault injected"), headers)
        return True

    def _token(self, body: bytes) -> None:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        client_id, client_secret = None, None
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            raw_id, _, raw_secret = decoded.partition(":")
            client_id = urllib.parse.unquote_plus(raw_id)
            client_secret = urllib.parse.unquote_plus(raw_secret)
            if "client_secret" in form:
                self._oauth_error(400, "invalid_request")
                return
        elif "client_id" in form:
            client_id = form["client_id"][0]
            client_secret = form.get("client_secret", [""])[0]
        with self.state.lock:
            self.state.bump("token_requests")
            good = secrets.compare_digest(
                (client_id or "").encode(), self.state.client_id.encode()
            ) and secrets.compare_digest(
                (client_secret or "").encode(), self.state.client_secret.encode()
            )
            if not good:
                self._oauth_error(401, "invalid_client")
                return
            if form.get("grant_type", [""])[0] != "client_credentials":
                self._oauth_error(400, "unsupported_grant_type")
                return
            token = secrets.token_urlsafe(24)
            self.state.tokens[token] = time.monotonic() + self.state.token_ttl
            self.state.bump("tokens_issued")
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(self.state.token_ttl),
        }
        if "scope" in form:
            answer["scope"] = form["scope"][0]
        self._send(200, answer, {"Cache-Control": "no-store"}, content_type="application/json")

    def _oauth_error(self, status: int, error: str) -> None:
        headers = {"WWW-Authenticate": 'Basic realm="token"'} if status == 401 else {}
        self._send(status, {"error": error}, headers, content_type="application/json")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        with self.state.lock:
            expires = self.state.tokens.get(token)
            if expires is not None and time.monotonic() < expires:
                return True
            self.state.bump("unauthorized")
        self._send(
            401,
            operation_outcome("login", "a valid bearer token is required"),
            {"WWW-Authenticate": 'Bearer realm="fhir", error="invalid_token"'},
        )
        return False

    def _fhir(self, method: str, path: str, query: str, body: bytes) -> None:
        if not self._authorized():
            return
        if method == "POST" and path == "":
            try:
                bundle = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise FhirFailure(400, "structure", "the body is not JSON") from None
            with self.state.lock:
                self.state.bump("transactions")
                try:
                    answer = run_transaction(self.state, bundle)
                except FhirFailure:
                    self.state.bump("transactions_refused")
                    raise
                self.state.bump("transactions_committed")
                self.state.save()
            self._send(200, answer)
            return
        parts = path.split("/")
        if method == "GET" and len(parts) == 1 and parts[0] in SUPPORTED_TYPES:
            with self.state.lock:
                self.state.bump("searches")
                answer = search(self.state, parts[0], query)
            self._send(200, answer)
            return
        if method == "GET" and len(parts) == 2 and parts[0] in SUPPORTED_TYPES:
            with self.state.lock:
                resource = self.state.store.resources.get(parts[0], {}).get(parts[1])
            if resource is None:
                raise FhirFailure(404, "not-found", f"{path} is not known")
            self._send(200, resource)
            return
        raise FhirFailure(405 if parts[0] in SUPPORTED_TYPES else 404, "not-supported", path)

    def _admin(self, method: str, path: str, body: bytes) -> None:
        data = json.loads(body) if body else {}
        state = self.state
        with state.lock:
            if method == "POST" and path == "faults":
                state.faults.append(
                    Fault(
                        status=int(data.get("status", 503)),
                        retry_after=data.get("retry_after"),
                        times=int(data.get("times", 1)),
                        route=str(data.get("route", "fhir")),
                        drop=bool(data.get("drop", False)),
                    )
                )
                answer: Any = {"faults": len(state.faults)}
            elif method == "POST" and path == "expire-tokens":
                state.tokens = dict.fromkeys(state.tokens, 0.0)
                answer = {"expired": len(state.tokens)}
            elif method == "POST" and path == "config":
                if "reject_codes" in data:
                    state.reject_codes = set(data["reject_codes"])
                answer = {"reject_codes": sorted(state.reject_codes)}
            elif method == "POST" and path == "reset":
                state.store = Store()
                state.tokens.clear()
                state.faults.clear()
                state.stats.clear()
                state.reject_codes = set(state.initial_reject_codes)
                state.save()
                answer = {"reset": True}
            elif method == "GET" and path == "stats":
                answer = {
                    **state.stats,
                    "resources": {t: len(r) for t, r in state.store.resources.items()},
                    "versions_written": state.store.versions_written,
                    "faults_pending": sum(f.times for f in state.faults),
                }
            elif method == "GET" and path.startswith("resources/"):
                answer = list(state.store.resources.get(path.split("/", 1)[1], {}).values())
            else:
                raise FhirFailure(404, "not-found", f"no admin route {path}")
        self._send(200, answer, content_type="application/json")

    def _send(
        self,
        status: int,
        body: Any,
        headers: Mapping[str, str] | None = None,
        *,
        content_type: str = FHIR_JSON,
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class FhirHttpServer(ThreadingHTTPServer):
    """The threading HTTP server carrying the shared state."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: ServerState) -> None:
        super().__init__(address, Handler)
        self.state = state


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(argv: Sequence[str] | None = None) -> None:
    """Command line entry: parse options, listen on loopback, print READY <port>, serve."""
    parser = argparse.ArgumentParser(description="batchbridge's FHIR R4 test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--token-ttl", type=float, default=3600.0)
    parser.add_argument("--reject-codes", default="", help="comma-separated LOINC codes")
    parser.add_argument("--state-file", type=Path, default=None)
    args = parser.parse_args(argv)
    if not _loopback(args.host):
        parser.error("the test server listens on loopback only")
    reject = frozenset(code for code in args.reject_codes.split(",") if code)
    state = ServerState(
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_ttl=args.token_ttl,
        reject_codes=set(reject),
        initial_reject_codes=reject,
        state_file=args.state_file,
    )
    if args.state_file is not None and args.state_file.exists():
        state.store = Store.from_json(json.loads(args.state_file.read_text(encoding="utf-8")))
    server = FhirHttpServer((args.host, args.port), state)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# -- running it from tests ---------------------------------------------------------------------


class FhirServerProcess:
    """A running test server subprocess, with URLs, credentials and admin helpers."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        host: str,
        port: int,
        client_id: str,
        client_secret: str,
    ) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self._admin = httpx.Client(base_url=f"http://{host}:{port}/_admin", timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{FHIR_BASE}"

    @property
    def token_url(self) -> str:
        return f"http://{self.host}:{self.port}/token"

    def __repr__(self) -> str:
        return f"FhirServerProcess(port={self.port})"

    def _post(self, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        response = self._admin.post(path, json=dict(payload or {}))
        response.raise_for_status()
        return response.json()

    def add_fault(
        self,
        status: int = 503,
        *,
        retry_after: str | None = None,
        times: int = 1,
        route: str = "fhir",
        drop: bool = False,
    ) -> None:
        """Answer the next `times` requests on `route` (fhir, token, any) with a failure."""
        self._post(
            "/faults",
            {
                "status": status,
                "retry_after": retry_after,
                "times": times,
                "route": route,
                "drop": drop,
            },
        )

    def expire_tokens(self) -> None:
        """Make every issued token invalid (clients must fetch a new one)."""
        self._post("/expire-tokens")

    def set_reject_codes(self, codes: Sequence[str]) -> None:
        """LOINC codes the server's terminology check refuses from now on."""
        self._post("/config", {"reject_codes": list(codes)})

    def reset(self) -> None:
        """Empty the store and forget tokens, faults, stats and reject codes."""
        self._post("/reset")

    def stats(self) -> dict[str, Any]:
        """Counters, resources per type and versions written."""
        response = self._admin.get("/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def resources(self, resource_type: str) -> list[dict[str, Any]]:
        """Every current resource of a type."""
        response = self._admin.get(f"/resources/{resource_type}")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def stop(self) -> None:
        """Terminate the process (killed if it does not stop within 5 s)."""
        self._admin.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> FhirServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_fhir_server(
    *,
    client_id: str,
    client_secret: str,
    host: str = "127.0.0.1",
    token_ttl: float = 3600.0,
    reject_codes: Sequence[str] = (),
    state_file: Path | None = None,
    startup_timeout: float = 20.0,
) -> FhirServerProcess:
    """Start the server as a subprocess on a free loopback port; wait for READY."""
    command = [
        sys.executable,
        "-m",
        "tests.support.fhir_server",
        "--host",
        host,
        "--port",
        "0",
        "--client-id",
        client_id,
        "--client-secret",
        client_secret,
        "--token-ttl",
        str(token_ttl),
        "--reject-codes",
        ",".join(reject_codes),
    ]
    if state_file is not None:
        command += ["--state-file", str(state_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    deadline = time.monotonic() + startup_timeout
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(timeout=remaining):
                break
            chunk = os.read(process.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    match = re.fullmatch(rb"READY (\d+)\n", line)
    if match is None:
        process.kill()
        process.wait(timeout=5)
        process.stdout.close()
        raise RuntimeError(f"the FHIR test server did not start (exit code {process.poll()})")
    return FhirServerProcess(process, host, int(match.group(1)), client_id, client_secret)


if __name__ == "__main__":
    serve()
